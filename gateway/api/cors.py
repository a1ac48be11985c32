"""CORS for pages on other origins (CORS_ORIGINS): off unless origins are named.

The gateway's own page is same-origin and needs none of this. A page elsewhere (an app that
embeds uploads) may call the API from a browser only when its origin is listed: the browser
then sends its preflight, and these headers let it run tus (`Upload-*`, `Tus-Resumable`,
`Authorization`) and read tus's answers (`Location`, `Upload-Offset`, ...). Credentials are
the bearer key in `Authorization`, never cookies, so `allow_credentials` stays off."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shared.settings import Settings

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "add_cors"]

ALLOWED_HEADERS = ["Authorization", "Content-Type", "Tus-Resumable", "Upload-Offset",
                   "Upload-Length", "Upload-Metadata", "Upload-Checksum", "Upload-Defer-Length",
                   "Upload-Concat", "X-HTTP-Method-Override", "Last-Event-ID"]
"""What a browser page may send: the key, tus's request headers, an SSE reconnect's id."""
EXPOSED_HEADERS = ["Location", "Upload-Offset", "Upload-Length", "Upload-Expires",
                   "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
                   "Tus-Checksum-Algorithm", "Retry-After", "Content-Disposition"]
"""What a browser page may read from answers: tus's, the download's name, Retry-After."""
METHODS = ["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]
PREFLIGHT_MAX_AGE_S = 600
"""How long a browser may reuse a preflight answer."""


class _CORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight (an origin, method or header not allowed)
    is a JSON `{"detail": ...}` 400 like every other refusal, and an origin not listed gets no
    CORS header at all: nothing tells a page elsewhere what this gateway would allow."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        why = bytes(answer.body).decode(errors="replace").strip() or "disallowed CORS request"
        return JSONResponse({"detail": f"{why} (CORS_ORIGINS)"}, status_code=answer.status_code,
                            headers={"Vary": "Origin"})

    async def simple_response(self, scope: Scope, receive: Receive, send: Send,
                              request_headers: Headers) -> None:
        """A request without an origin (not a browser's cross-origin call: curl, the CLI,
        health checks) or from an origin not listed gets the answer as it is, without
        Starlette's `Access-Control-Expose-Headers` (which it adds for any origin)."""
        origin = request_headers.get("origin")
        if origin is None or not self.is_allowed_origin(origin):
            await self.app(scope, receive, send)
            return
        await super().simple_response(scope, receive, send, request_headers)


def add_cors(app: FastAPI, settings: Settings) -> None:
    """CORSMiddleware for CORS_ORIGINS; nothing at all when it is empty (no CORS headers)."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(_CORS, allow_origins=origins, allow_methods=METHODS,
                       allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
                       allow_credentials=False, max_age=PREFLIGHT_MAX_AGE_S)
