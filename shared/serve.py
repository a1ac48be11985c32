"""Run an ASGI app under uvicorn without letting uvicorn replace our logging.

Every service goes through `server_config`, so each holds at most MAX_CONNECTIONS connections
(uvicorn's `limit_concurrency`: a request arriving while the service already holds that many
connections, its own included, is answered 503 at once) and closes kept-alive connections
idle for KEEP_ALIVE_S. A slow body is the gateway's to cut (`gateway.intake.pacing`); this
bound is what keeps a crowd of idle or half-open sockets from taking file descriptors and
memory without limit (docs/guarantees.md, "Threat model", "Slow clients and disk").
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import uvicorn
from starlette.types import ASGIApp
from uvicorn._types import ASGIReceiveEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from shared.settings import Settings, get_settings
from shared.timing import GRACEFUL_SHUTDOWN_S, KEEP_ALIVE_S

__all__ = ["HttpProtocol", "serve", "server_config"]


READ_BYTES = 1 << 20
"""Bytes one socket read may take (asyncio's own transports read at most 256 KiB): a 1 GiB
body in ~1000 reads rather than ~4000, each with its Python work (parse, wake the app)."""
UNREAD_BODY_BYTES = 2 << 20
"""Body bytes a connection may hold that its app has not taken yet before its socket is paused
(uvicorn pauses past 64 KiB, `HIGH_WATER_LIMIT`: with 1 MiB reads, at every piece, and the
app's next receive() resumes it, two `epoll_ctl` and their Python per piece, ~1 000 pairs per
GiB). Past this mark reading pauses until the app has taken the pieces down to half of it, so
a connection holds at most UNREAD_BODY_BYTES + READ_BYTES of unread body (3 MiB) whatever
the client sends, and pausing is left to an app that really falls behind (docs/guarantees.md,
"Resource bounds", "unread request body")."""
_reads = threading.local()
"""One read buffer per event-loop thread (see `HttpProtocol.get_buffer`)."""


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle with the body as a queue of the pieces httptools made.

    `receive()` hands the app the oldest piece as it is (no join, no copy) and, while pieces
    are queued, without waiting; the socket is paused only past UNREAD_BODY_BYTES queued. The
    rest is uvicorn's: `100 Continue`, `http.disconnect` once the client is gone or the answer
    sent (unread pieces are then dropped with the cycle), and a receive() after the last piece
    that waits for the disconnect (Starlette listens for it while it streams an answer)."""

    pieces: deque[bytes]
    unread: int

    @staticmethod
    def adopt(cycle: RequestResponseCycle) -> None:
        """Make a fresh `RequestResponseCycle` (no body yet) one of these. Its task's first
        step, which looks up `receive`, has not run yet: uvicorn only created the task."""
        cycle.__class__ = _Cycle
        assert isinstance(cycle, _Cycle)
        cycle.pieces = deque()
        cycle.unread = 0

    def add(self, body: bytes) -> None:
        """A body piece from the parser (the event loop's thread): queued, the app woken."""
        self.pieces.append(body)
        self.unread += len(body)
        if self.unread > UNREAD_BODY_BYTES:
            self.flow.pause_reading()
        self.message_event.set()

    async def receive(self) -> ASGIReceiveEvent:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        pieces = self.pieces
        if not pieces and not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        if not pieces:
            return {"type": "http.request", "body": b"", "more_body": self.more_body}
        body = pieces.popleft()
        self.unread -= len(body)
        if not pieces:
            # Taken to the last piece: the event's earlier sets are spent (a set after this
            # is a new piece, the body's end or a disconnect, each worth waking for).
            self.message_event.clear()
        if self.unread <= UNREAD_BODY_BYTES // 2:
            self.flow.resume_reading()
        return {"type": "http.request", "body": body, "more_body": bool(pieces) or self.more_body}


class HttpProtocol(HttpToolsProtocol, asyncio.BufferedProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools, less three copies of every request body byte
    and its pause and resume of the socket at every piece.

    Every service runs on it, named rather than left to uvicorn's "auto": a missing httptools
    is an error at start-up, not a silent fall back to h11, uvicorn's pure-Python parser, which
    copies each body chunk through its own buffers and alone held `POST /upload` well below a
    10 Gbit/s link (BENCHMARKS.md, "Upload speed"). uvicorn's httptools protocol then still
    appends each body piece to a bytearray and hands the app `bytes()` of it: two more copies.
    Here every piece is handed over as the very bytes object httptools made, one per
    receive(), pieces that pile up before the app reads included (queued, not joined: `_Cycle`),
    and the socket is paused only past UNREAD_BODY_BYTES unread rather than uvicorn's 64 KiB.

    And it reads the socket as a `BufferedProtocol`: `recv_into` one READ_BYTES buffer, reused
    for every read of every connection its event loop serves, instead of a fresh bytes object
    per read. httptools copies what it hands on (URL, headers, each body piece) before
    `buffer_updated` returns and keeps no reference to the buffer, so the next read may
    overwrite it; one buffer per thread keeps two servers in one process (tests) apart."""

    def get_buffer(self, sizehint: int) -> memoryview:
        view: memoryview | None = getattr(_reads, "view", None)
        if view is None:
            view = _reads.view = memoryview(bytearray(READ_BYTES))
        return view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_reads.view[:nbytes])  # type: ignore[arg-type]  # httptools takes any buffer

    def on_headers_complete(self) -> None:
        cycle = self.cycle
        super().on_headers_complete()
        if self.cycle is not cycle:  # a new request's (not an upgrade's)
            _Cycle.adopt(self.cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _Cycle) or cycle.response_complete or (
                self.parser.should_upgrade() and self._should_upgrade()):
            super().on_body(body)
            return
        cycle.add(body)


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
        http=HttpProtocol,
    )


def serve(app: ASGIApp, host: str, port: int, service: str,
          settings: Settings | None = None) -> None:
    """Blocks until SIGINT/SIGTERM; in-flight requests get GRACEFUL_SHUTDOWN_S to finish."""
    settings = settings or get_settings()
    logging.getLogger(__name__).info("%s listening on http://%s:%d (at most %d connections)",
                                     service, host, port, settings.max_connections)
    uvicorn.Server(server_config(app, host, port, settings)).run()
