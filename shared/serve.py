"""Run an ASGI app under uvicorn without letting uvicorn replace our logging.

Every service goes through `server_config`, so each holds at most MAX_CONNECTIONS connections
(uvicorn's `limit_concurrency`: a request arriving while the service already holds that many
connections, its own included, is answered 503 at once) and closes kept-alive connections
idle for KEEP_ALIVE_S. A slow body is the gateway's to cut (`gateway.intake.pacing`); this
bound is what keeps a crowd of idle or half-open sockets from taking file descriptors and
memory without limit (docs/guarantees.md, "Threat model", "Slow clients and disk").
"""

from __future__ import annotations

import logging

import uvicorn
from starlette.types import ASGIApp

from shared.settings import Settings, get_settings
from shared.timing import GRACEFUL_SHUTDOWN_S, KEEP_ALIVE_S

__all__ = ["HTTP_PARSER", "serve", "server_config"]

HTTP_PARSER = "httptools"
"""uvicorn's HTTP/1.1 implementation for every service. httptools (llhttp, in C) hands a body
over as it comes off the socket; h11, uvicorn's pure-Python fallback, copies every body chunk
through its own receive buffer, which alone held `POST /upload` well below a 10 Gbit/s
link (BENCHMARKS.md, "Upload speed"). Named rather than left to uvicorn's "auto", so a
missing httptools is an error at start-up, not a silent fall back to the slow path."""


def server_config(app: ASGIApp, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """The one uvicorn configuration of every service."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # setup_logging() owns the handlers
        access_log=False,  # RequestLoggingMiddleware logs requests
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=settings.max_connections,
        backlog=settings.max_connections,
        lifespan="on",
        http=HTTP_PARSER,
    )


def serve(app: ASGIApp, host: str, port: int, service: str,
          settings: Settings | None = None) -> None:
    """Blocks until SIGINT/SIGTERM; in-flight requests get GRACEFUL_SHUTDOWN_S to finish."""
    settings = settings or get_settings()
    logging.getLogger(__name__).info("%s listening on http://%s:%d (at most %d connections)",
                                     service, host, port, settings.max_connections)
    uvicorn.Server(server_config(app, host, port, settings)).run()
