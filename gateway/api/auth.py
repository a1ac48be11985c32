"""Bearer-token access and tenants: with any key configured (API_KEY, API_KEYS, API_KEYS_FILE,
ADMIN_KEY), every route but /health needs one, and the key says who the caller is.

The keys are only known here as the hashes of `Settings.key_table` (`shared.keys`): a presented
key is hashed and compared with every stored hash in constant time. Without any key the gateway
is open, as it always was: every caller is the one anonymous tenant and sees every job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.keys import key_hash
from shared.settings import Settings

__all__ = ["ANONYMOUS", "Caller", "bearer", "caller_for", "key_hash", "require_api_key"]

bearer = HTTPBearer(auto_error=False,
                    description="a tenant's key (API_KEY / API_KEYS) or ADMIN_KEY, when set")


@dataclass(frozen=True)
class Caller:
    """Who is asking: the hash its new jobs and uploads keep, its label (for logs), and whether
    it may see every tenant's jobs."""

    key_hash: str | None
    label: str
    is_admin: bool = False

    @property
    def owner(self) -> str | None:
        """The `api_key_hash` a row must have for this caller to see it; None: every row (the
        admin, or anyone on an open gateway)."""
        return None if self.is_admin or self.key_hash is None else self.key_hash


ANONYMOUS = Caller(key_hash=None, label="anonymous")
"""Every caller of a gateway without keys: one open tenant, as before tenants existed."""


def caller_for(settings: Settings, key: str | None) -> Caller | None:
    """The caller a presented bearer `key` makes (ANONYMOUS when no key is configured); None
    when keys are configured and `key` is none of them. The one lookup of the API's routes
    and of the MCP endpoint (`gateway.api.mcp`)."""
    table = settings.key_table
    if not table.configured:
        return ANONYMOUS
    tenant = table.lookup(key or "")
    return None if tenant is None else Caller(tenant.key_hash, tenant.label, tenant.is_admin)


async def require_api_key(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    """The router-level guard; returns the caller (ANONYMOUS when no key is configured)."""
    settings: Settings = request.app.state.gw.settings
    caller = caller_for(settings, creds.credentials if creds is not None else None)
    if caller is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send 'Authorization: Bearer <API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller
