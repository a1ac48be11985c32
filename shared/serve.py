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
import contextlib
import logging
import os
import select
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import Settings, get_settings
from shared.threads import CLIENT_ERRORS, STOP_CHECK_S, in_own_thread
from shared.timing import GRACEFUL_SHUTDOWN_S, KEEP_ALIVE_S

__all__ = ["BODY_TAP", "PATHSEND", "SEND_TAP", "BodyTap", "HttpProtocol", "SendTap",
           "send_file", "serve", "server_config"]


READ_BYTES = 1 << 20
"""Bytes one socket read may take (asyncio's own transports read at most 256 KiB): a 1 GiB
body in ~1000 reads rather than ~4000, each with its Python work (parse, wake the app)."""
_reads = threading.local()
"""One read buffer per event-loop thread (see `HttpProtocol.get_buffer`)."""
BODY_TAP = "mattepipe.body_tap"
"""The ASGI scope extension (`scope["extensions"][BODY_TAP]`) that carries a request's
`BodyTap`: present for a body with a Content-Length (not chunked) on `HttpProtocol`."""
SEND_TAP = "mattepipe.send_tap"
"""The ASGI scope extension that carries a request's `SendTap` (every request on
`HttpProtocol`)."""
TAKE_WAIT_S = 5.0
"""Longest `SendTap.take` waits for what the transport still holds to be sent."""
PATHSEND = "http.response.pathsend"
"""The ASGI "path send" extension (asgiref's spec): the app names a file and the server sends
it whole as the body. Starlette's `FileResponse` uses it for a whole-file answer (a range is
still sent by the app); on `HttpProtocol` it is `os.sendfile` from a thread (`send_file`)."""
SENDFILE_BYTES = 1 << 30
"""Most bytes one `os.sendfile` call is asked for (Linux moves at most ~2 GiB a call)."""
PATH_PIECE_BYTES = 1 << 20
"""Piece size of a path sent through the event loop when the socket cannot be lent."""


class HttpProtocol(HttpToolsProtocol, asyncio.BufferedProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools, less three copies of every request body byte.

    Every service runs on it, named rather than left to uvicorn's "auto": a missing httptools
    is an error at start-up, not a silent fall back to h11, uvicorn's pure-Python parser, which
    copies each body chunk through its own buffers and alone held `POST /upload` well below a
    10 Gbit/s link (BENCHMARKS.md, "Upload speed"). uvicorn's httptools protocol then still
    appends each body piece to a bytearray and hands the app `bytes()` of it: two more copies.
    Here a piece that arrives while the app has taken everything before it is handed over as
    the very bytes object httptools made (`bytes()` of a bytes is the object itself); pieces
    that pile up before the app reads are joined as uvicorn joins them, and flow control
    (pausing the socket past HIGH_WATER_LIMIT unread bytes) is uvicorn's, unchanged.

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_seen = 0
        """Body bytes the parser has handed on for the current request (`BodyTap`)."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:
            return  # an upgrade: no request cycle of its own
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[assignment]
        tap = extensions[SEND_TAP] = SendTap(self, cycle)
        extensions[PATHSEND] = {}
        # The cycle's task has not run yet: it looks `send` up on the instance when it does.
        sending: Any = cycle
        sending.send = _with_pathsend(sending.send, tap)
        length = -1
        for name, value in self.headers:
            if name == b"transfer-encoding":
                return  # chunked: the parser must see every byte
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if length > 0:
            extensions[BODY_TAP] = BodyTap(self, cycle, length)

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        cycle = self.cycle
        if (cycle.body or cycle.response_complete
                or (self.parser.should_upgrade() and self._should_upgrade())):
            if isinstance(cycle.body, bytes):  # a piece handed over whole: join as uvicorn does
                cycle.body = bytearray(cycle.body)
            super().on_body(body)
            return
        cycle.body = body  # type: ignore[assignment]  # read once by receive(), never mutated
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()


class _HeldFlow:
    """A cycle's flow control while a `BodyTap` has the socket: a `receive()` meanwhile (a
    middleware listening for a disconnect) must not resume reading under the tap's thread."""

    def __init__(self, flow: Any) -> None:
        self._flow = flow

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flow, name)


class BodyTap:
    """The rest of one request's body as the socket itself, for a reader that moves it past
    Python (`gateway.intake.splice`: `os.splice` socket → pipe → file; BENCHMARKS.md "Upload
    speed: the fourth pass"). Receive side only.

    `take` pauses reading (the event loop no longer touches the socket), answers a pending
    `Expect: 100-continue`, and hands over the body pieces the parser already passed on (they
    were never given to the app), the socket's descriptor and the bytes still to come:
    Content-Length less what the parser saw. The reader must then read exactly those bytes
    and `release(True)`: the parser, which still counts the body's bytes it never saw, is
    replaced by a fresh one, as at the start of a connection, the request is complete, and
    the connection goes on to its next request after the answer (keep-alive) as any other.
    `release(False)` (an error, a cut, a stall mid-body) leaves the parser out of step with
    the stream: the connection closes after the answer instead."""

    def __init__(self, protocol: HttpProtocol, cycle: Any, length: int) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._length = length
        self._taken = False

    def take(self) -> tuple[list[bytes], int, int] | None:
        p, cycle = self._protocol, self._cycle
        if (self._taken or p.cycle is not cycle or not cycle.more_body or cycle.disconnected
                or cycle.response_complete or p.transport.is_closing()):
            return None
        sock = p.transport.get_extra_info("socket")
        if sock is None:
            return None
        p.flow.pause_reading()
        self._taken = True
        if cycle.waiting_for_100_continue:
            p.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        pieces = [bytes(cycle.body)] if cycle.body else []
        cycle.body = bytearray()
        cycle.message_event.clear()
        cycle.flow = _HeldFlow(p.flow)  # type: ignore[assignment]  # duck-typed stand-in
        return pieces, sock.fileno(), self._length - p.body_seen

    def release(self, complete: bool) -> None:
        p, cycle = self._protocol, self._cycle
        if not self._taken:
            return
        self._taken = False
        cycle.flow = p.flow
        if complete:
            p.parser = httptools.HttpRequestParser(p)
            with contextlib.suppress(AttributeError):  # httptools < 0.6.3, as uvicorn does
                p.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            cycle.more_body = False
            cycle.message_event.set()
            # Reading resumes after the answer (`on_response_complete`), as for any request.
        else:
            cycle.keep_alive = False


class SendTap:
    """The rest of one response's body written to the socket by the app, from a thread of its
    own, past the event loop: a big zip spliced from its worker processes' pipes
    (`gateway.results.zip_processes`; BENCHMARKS.md, "The download, sixth pass"). Send side
    only; the mirror of `BodyTap`.

    `take`, once the response has started with a Content-Length, waits (at most TAKE_WAIT_S)
    until the transport has sent all it holds, and hands over a duplicate of the socket's
    descriptor and the body bytes still to send; None when it cannot (no Content-Length, a
    HEAD, the connection closing, a response not started). Nothing else writes on the
    connection until the response completes. The caller writes from its thread, waiting on
    the socket when it is full (the descriptor is non-blocking), then `release(fd, sent)`:
    the duplicate is closed and what it wrote counts as sent through `send`; the app ends
    the response with an empty last body message. Short of the bytes (the client gone, an
    error) the connection closes after the response: the client sees a body short of its
    Content-Length, as when a streamed body stops.

    A duplicate, not the transport's own descriptor: when the client goes away mid-body the
    transport closes its descriptor, and that number may go to the next connection accepted;
    the duplicate still names this socket, so a last write fails (EPIPE) rather than landing
    in another client's answer."""

    def __init__(self, protocol: HttpProtocol, cycle: Any) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._taken = False

    def _usable(self) -> bool:
        p, cycle = self._protocol, self._cycle
        return not (self._taken or p.cycle is not cycle or not cycle.response_started
                    or cycle.response_complete or cycle.chunked_encoding is not False
                    or cycle.disconnected or p.transport.is_closing()
                    or cycle.scope["method"] == "HEAD")

    async def take(self) -> tuple[int, int] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAKE_WAIT_S
        transport = self._protocol.transport
        while self._usable() and transport.get_write_buffer_size():
            if loop.time() > deadline:
                return None
            await asyncio.sleep(0.002)
        if not self._usable():
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        self._taken = True
        return os.dup(sock.fileno()), int(self._cycle.expected_content_length)

    def release(self, fd: int, sent: int) -> None:
        if not self._taken:
            return
        self._taken = False
        os.close(fd)
        cycle = self._cycle
        cycle.expected_content_length -= min(sent, cycle.expected_content_length)
        if cycle.expected_content_length:
            cycle.keep_alive = False

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _with_pathsend(send: Send, tap: SendTap) -> Send:
    """uvicorn's `send` for one request, taught PATHSEND."""

    async def send_or_path(message: dict[str, Any]) -> None:
        if message["type"] == PATHSEND:
            await _send_path(send, tap, str(message["path"]))
        else:
            await send(message)

    return send_or_path


async def _send_path(send: Send, tap: SendTap, path: str) -> None:
    """The whole file at `path` as the rest of a started response's body (its Content-Length
    is the file's size): `os.sendfile` into the lent socket from a thread of its own, or read
    a piece at a time and sent through the loop when the socket cannot be lent. Short of the
    bytes (the client gone) the response is left incomplete: the connection closes."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        taken = await tap.take()
        if taken is None:
            while piece := await asyncio.to_thread(os.read, fd, PATH_PIECE_BYTES):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        else:
            sock, count = taken
            sent = 0
            try:
                sent = await in_own_thread(lambda stop: send_file(sock, fd, count, stop),
                                           "sendfile")
            finally:
                tap.release(sock, sent if sent == count else 0)
            if sent < count:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        os.close(fd)


def send_file(sock: int, fd: int, count: int, stop: threading.Event) -> int:
    """The first `count` bytes of the file `fd` into the non-blocking socket `sock`, by the
    kernel (`os.sendfile`), waiting on the socket when it is full; the bytes sent. Fewer when
    the client goes, the file is shorter, or `stop` is set."""
    writable = select.poll()
    writable.register(sock, select.POLLOUT)
    sent = 0
    while sent < count and not stop.is_set():
        try:
            n = os.sendfile(sock, fd, sent, min(count - sent, SENDFILE_BYTES))
        except BlockingIOError:
            writable.poll(int(STOP_CHECK_S * 1000))
            continue
        except OSError as exc:
            if exc.errno in CLIENT_ERRORS:
                break
            raise
        if n == 0:
            break
        sent += n
    return sent


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
