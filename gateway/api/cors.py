"""CORS for pages on other origins (CORS_ORIGINS): off unless origins are named.

The gateway's own page is same-origin and needs none of this. A page elsewhere (an app that
embeds uploads) may call the API from a browser only when its origin is listed: the browser
then sends its preflight, and these headers let it run tus (`Upload-*`, `Tus-Resumable`,
`Authorization`) and read tus's answers (`Location`, `Upload-Offset`, ...). Credentials are
the bearer key in `Authorization`, never cookies, so `allow_credentials` stays off."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

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


def add_cors(app: FastAPI, settings: Settings) -> None:
    """CORSMiddleware for CORS_ORIGINS; nothing at all when it is empty (no CORS headers)."""
    origins = settings.cors_origin_list
    if not origins:
        return
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=METHODS,
                       allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
                       allow_credentials=False, max_age=PREFLIGHT_MAX_AGE_S)
