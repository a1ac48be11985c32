"""An upload body to its file at the speed of the wire: no copies, the disk off the event loop.

The chunks a body arrives in are kept as they are (bytes, or views into them for a multipart
part) and, once WRITE_BYTES have gathered, written together by one `os.writev` in a worker
thread while the next batch gathers; a batch waits for the write before it, so at most two
batches (2 × WRITE_BYTES) are held whatever the body's size. Gathering into one buffer and
writing that would copy every byte once more on the event loop, which is what held uploads
to a fraction of a loopback socket's speed (BENCHMARKS.md, "Upload speed"). A digest, when
the caller needs one (a tus `Upload-Checksum`), is updated in the same thread: hashlib
releases the GIL, so the hash costs the event loop nothing either. No fsync: the bytes are
in the page cache when an answer goes out, as with any write; what a crash loses a tus
client resumes (the offset is the file's size) and a `POST /upload` client sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Protocol

__all__ = ["WRITE_BYTES", "Spool", "write_all"]

WRITE_BYTES = 1 << 20
"""Body bytes gathered before one write in a worker thread (and the most held per batch).
1 MiB, as a tus PATCH's: with 4 MiB batches `POST /upload` took twice the CPU time of a PATCH
of the same body and ran 2-3x slower beside it on a busy machine, even with the heap kept
(BENCHMARKS.md, "Upload speed: the page faults"); a batch written soon after it arrived is
likely still in the CPU's caches. A written batch's pieces are freed together: the gateway
keeps that heap for the next batch (`shared.heap.keep_heap`), or glibc would hand it back to
the kernel and fault it in again for every batch."""
_IOV_MAX = 1024
"""Buffers per `os.writev` call: Linux's IOV_MAX; a longer list is written in turns."""


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def write_all(fd: int, chunks: list[bytes | memoryview]) -> int:
    """Write `chunks` in order at `fd`'s position; a short write resumes where it stopped.
    The bytes written (all of them, or an OSError)."""
    total = 0
    views = [memoryview(c) for c in chunks]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        total += n
        while views and n >= views[0].nbytes:
            n -= views.pop(0).nbytes
        if n:
            views[0] = views[0][n:]
    return total


class Spool:
    """Chunks for one file descriptor, written a batch at a time with one write in flight.

    `check(written)` runs in the worker thread after each write (a free-space check, say)
    and may raise; `digest` is updated with every byte in order, in the same thread. A
    failed write surfaces at the next `flush`/`drain`."""

    def __init__(self, fd: int, check: Callable[[int], None] | None = None,
                 digest: _Digest | None = None, batch: int = WRITE_BYTES) -> None:
        self.fd = fd
        self.check = check
        self.digest = digest
        self.batch = batch
        self.chunks: list[bytes | memoryview] = []
        self.gathered = 0
        self.written = 0
        """Bytes the completed writes put in the file."""
        self.pending: asyncio.Future[int] | None = None

    def add(self, chunk: bytes | memoryview) -> bool:
        """Keep `chunk` (no copy); True once a batch has gathered and `flush` should run."""
        if chunk:
            self.chunks.append(chunk)
            self.gathered += len(chunk)
        return self.gathered >= self.batch

    def _write(self, chunks: list[bytes | memoryview]) -> int:
        try:
            if self.digest is not None:
                for c in chunks:
                    self.digest.update(c)
            n = write_all(self.fd, chunks)
        finally:
            # Let go of the batch here, in the worker thread: the executor keeps its work item
            # (and so this list) until the thread next holds the GIL, which on a busy event
            # loop can be several batches later.
            chunks.clear()
        if self.check is not None:
            self.check(n)
        return n

    async def settle(self) -> None:
        """Wait for the write in flight; its error, if any, is raised here."""
        pending, self.pending = self.pending, None
        if pending is not None:
            self.written += await pending

    async def flush(self) -> None:
        """Hand the gathered batch to a worker thread, after the write before it is done."""
        await self.settle()
        if self.chunks:
            chunks, self.chunks, self.gathered = self.chunks, [], 0
            self.pending = asyncio.ensure_future(asyncio.to_thread(self._write, chunks))

    async def drain(self) -> None:
        """Every byte added is in the file (or the write's error is raised)."""
        await self.flush()
        await self.settle()

    async def abandon(self) -> None:
        """Drop what gathered and wait out the write in flight, whatever it raises: after
        this nothing touches the file, so it may be truncated, closed or removed."""
        self.chunks, self.gathered = [], 0
        pending, self.pending = self.pending, None
        if pending is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([pending])
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                self.written += pending.result()
