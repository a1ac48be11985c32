"""The internal plane's credential: one bearer token (INTERNAL_TOKEN) that the gateway, the
balancers and the workers share (docs/guarantees.md, "Threat model", "The internal plane").

Balancers and workers take work from whoever can reach them, and what they take decides
where files are written and which workers get every task. So every route of theirs but
`/health` (liveness, which carries nothing) needs `Authorization: Bearer <INTERNAL_TOKEN>`,
`/metrics` included: the token is compared in constant time, and a service without a token
refuses to start rather than serve everyone.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import ConfigError

__all__ = [
    "OPEN_PATHS",
    "InternalAuth",
    "MissingInternalToken",
    "auth_headers",
    "require_token",
    "token_matches",
]

OPEN_PATHS = frozenset({"/health"})
"""Routes a balancer or worker answers without the token: liveness only (Docker and the
balancer's health loop probe it, and it says nothing a caller could use)."""


class MissingInternalToken(ConfigError):
    """A balancer or worker was started without INTERNAL_TOKEN."""


def require_token(token: str | None, service: str) -> str:
    """The token, or a clear refusal to start an internal service without one."""
    if not token:
        raise MissingInternalToken(
            f"{service}: INTERNAL_TOKEN is not set; balancers and workers refuse to serve "
            "without it (the local stack generates one into DATA_DIR/internal_token; in "
            "containers set it in .env)")
    return token


def auth_headers(token: str | None) -> dict[str, str]:
    """The header an internal call carries (none when no token is configured)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class InternalAuth:
    """ASGI middleware: 401 (a non-retryable `StageError` body) on every route outside
    `OPEN_PATHS` without the token, before the request body is read or any route runs."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = require_token(token, "internal service")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        body: dict[str, Any] = {
            "status": "error", "retryable": False,
            "detail": "internal service: missing or wrong internal token "
                      "(Authorization: Bearer <INTERNAL_TOKEN>)",
        }
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": raw})
