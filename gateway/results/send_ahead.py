"""A blocking iterator of byte pieces run in its own thread, a few pieces ahead of the socket.

A zip of a finished job is made by reading its files (`gateway.results.zip_stream`), and sent
by the event loop. Iterated in a threadpool one piece at a time (`iterate_in_threadpool`),
the two took turns: the thread read the next MiB only once the loop had sent the last one and
asked again, so the download's time was the reading plus the sending (issue 17, "The
download, fourth pass"). Here one thread per download reads on while the loop sends: it keeps
up to AHEAD_PIECES pieces ready and waits only when they are all still unsent (the client is
slower than the disk: this is what bounds memory). The loop is woken by the thread only when
it is waiting for a piece; while the thread keeps ahead, a piece costs the loop one deque pop.

The mirror of the upload's writer thread (`gateway.intake.spool`). The iterator is closed in
its own thread, after its last piece or once the download is abandoned (a client gone: the
async generator's `finally`), so its own cleanup (`zip_chunks`: the spool, a partial
download's temporary folder) runs as it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator

__all__ = ["AHEAD_PIECES", "send_ahead"]

AHEAD_PIECES = 4
"""Pieces (ZIP_CHUNK_BYTES each, 1 MiB) kept ready ahead of the sending: with the one the
thread is reading and the one being sent, a download holds ~6 MiB whatever the job's size
(docs/guarantees.md). Enough to ride out a socket's bursts; more only holds memory."""


class _Ahead:
    """The state the reading thread and the loop share, under one lock."""

    def __init__(self, pieces: Iterator[bytes], depth: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.pieces = pieces
        self.depth = depth
        self.loop = loop
        self.ready: deque[bytes] = deque()
        self.done = False
        self.error: BaseException | None = None
        self.stopped = False
        self.waiter: asyncio.Future[None] | None = None
        self.cond = threading.Condition()

    def run(self) -> None:
        """The reading thread: pieces until the end, an error, or `stop`."""
        try:
            for piece in self.pieces:
                with self.cond:
                    while len(self.ready) >= self.depth and not self.stopped:
                        self.cond.wait()
                    if self.stopped:
                        return
                    self.ready.append(piece)
                    self._wake()
        except BaseException as exc:  # raised to the loop at its next piece
            with self.cond:
                self.error = exc
        finally:
            with contextlib.suppress(Exception):
                close = getattr(self.pieces, "close", None)
                if close is not None:
                    close()
            with self.cond:
                self.done = True
                self._wake()

    def _wake(self) -> None:
        """Wakes the loop if it waits for a piece (called with the lock held)."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(_settle, waiter)

    async def next(self) -> bytes | None:
        """The next piece, None after the last (the thread's error raised here)."""
        while True:
            with self.cond:
                if self.ready:
                    piece = self.ready.popleft()
                    self.cond.notify()
                    return piece
                if self.error is not None:
                    raise self.error
                if self.done:
                    return None
                self.waiter = waiter = self.loop.create_future()
            await waiter

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.ready.clear()
            self.cond.notify()


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def send_ahead(pieces: Iterator[bytes], depth: int = AHEAD_PIECES
                     ) -> AsyncIterator[bytes]:
    """`pieces` (blocking: read in a thread of their own) for an async consumer, up to
    `depth` pieces ahead. The thread ends, and closes `pieces`, once they are all taken or
    this generator is closed (the consumer gone)."""
    ahead = _Ahead(pieces, depth, asyncio.get_running_loop())
    thread = threading.Thread(target=ahead.run, name="zip-send", daemon=True)
    thread.start()
    try:
        while (piece := await ahead.next()) is not None:
            yield piece
    finally:
        ahead.stop()
