"""The HTTP side of `gateway.errors`: the one handler that turns a domain refusal into its
answer, and the body reader that turns Starlette's `ClientDisconnect` into a domain error.

Domain code never sees FastAPI or Starlette: routes hand it `request_body(request)` and the
request's headers, and whatever `GatewayError` it raises comes back here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from gateway.errors import ClientGone, GatewayError

__all__ = ["add_error_handlers", "request_body"]


async def gateway_error(_request: Request, exc: Exception) -> JSONResponse:
    """`{"detail": ...}` with the refusal's status and headers, as an HTTPException gave."""
    assert isinstance(exc, GatewayError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=exc.headers or None)


def add_error_handlers(app: FastAPI) -> None:
    """Register the one mapping of domain refusals to HTTP answers on `app`."""
    app.add_exception_handler(GatewayError, gateway_error)


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away raises `ClientGone`."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect as exc:
        raise ClientGone() from exc
