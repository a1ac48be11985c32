"""The HTTP side of `gateway.errors`: the one place that turns domain errors into answers (a
refusal, a full task database), and the body reader that turns Starlette's `ClientDisconnect`
into a domain error.

Domain code never sees FastAPI or Starlette: routes hand it `request_body(request)` and the
request's headers, and whatever `GatewayError` it raises comes back here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect

from gateway.errors import ClientGone, GatewayError

__all__ = ["add_error_handlers", "request_body"]

log = logging.getLogger("gateway")


async def gateway_error(_request: Request, exc: Exception) -> JSONResponse:
    """`{"detail": ...}` with the refusal's status and headers, as an HTTPException gave."""
    assert isinstance(exc, GatewayError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=exc.headers or None)


async def database_error(_request: Request, exc: Exception) -> JSONResponse:
    """SQLite out of space is the disk's state, not a bug: 507 with what to do."""
    assert isinstance(exc, OperationalError)
    if "full" not in str(exc.orig).lower():
        raise exc
    log.error("database write failed: %s", exc.orig)
    return JSONResponse({"detail": "not enough disk space for the task database; free "
                                   "space in DATA_DIR and retry"}, status_code=507)


def add_error_handlers(app: FastAPI) -> None:
    """Register the one mapping of domain errors to HTTP answers on `app`."""
    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(OperationalError, database_error)


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away raises `ClientGone`."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise ClientGone() from exc
