"""Run an ASGI app under uvicorn without letting uvicorn replace our logging."""

from __future__ import annotations

import logging

import uvicorn
from starlette.types import ASGIApp

from shared.timing import GRACEFUL_SHUTDOWN_S

__all__ = ["serve"]


def serve(app: ASGIApp, host: str, port: int, service: str) -> None:
    """Blocks until SIGINT/SIGTERM; in-flight requests get GRACEFUL_SHUTDOWN_S to finish."""
    logging.getLogger(__name__).info("%s listening on http://%s:%d", service, host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # setup_logging() owns the handlers
        access_log=False,  # RequestLoggingMiddleware logs requests
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        timeout_keep_alive=30,
        lifespan="on",
    )
    uvicorn.Server(config).run()
