"""Bearer-token access: with API_KEY set, every route but /health needs it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["bearer", "key_hash", "require_api_key"]

bearer = HTTPBearer(auto_error=False, description="API_KEY, when the gateway has one")


def key_hash(key: str | None) -> str | None:
    """What a job keeps of the key that created it (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


async def require_api_key(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str | None:
    """The router-level guard; returns the presented key (None when no API_KEY is set)."""
    expected: str | None = request.app.state.gw.settings.api_key
    if not expected:
        return None
    given = creds.credentials if creds is not None else ""
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key: send 'Authorization: Bearer <API_KEY>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return given
