"""An upload body to its file at the speed of the wire: no copies, the disk off the event loop.

The chunks a body arrives in are kept as they are (bytes, or views into them for a multipart
part) and, once WRITE_BYTES have gathered, handed as one batch to the upload's own writer
thread, which writes it with one `os.writev` while the event loop goes on reading the socket.
Gathering into one buffer and writing that would copy every byte once more on the event loop,
which is what held uploads to a fraction of a loopback socket's speed (BENCHMARKS.md, "Upload
speed"). A digest, when the caller needs one (a tus `Upload-Checksum`), is updated in the same
thread: hashlib releases the GIL, so the hash costs the event loop nothing either. No fsync:
the bytes are in the page cache when an answer goes out, as with any write; what a crash
loses a tus client resumes (the offset is the file's size) and a `POST /upload` client sends
again.

Why a thread per upload rather than `asyncio.to_thread` per batch (issue 17, "Upload at the
speed of the wire"): each `to_thread` is an executor work item, a concurrent future chained
to an asyncio one, and a wake-up of the event loop through its self-pipe when the write ends
(a `send`, an `epoll_wait` return, a `recv`, a loop turn) — per MiB, on the loop's own core,
part of what `POST /upload` spent beyond a raw socket (BENCHMARKS.md, "Upload speed: the
writer thread"). The writer thread takes
batches from a queue instead, and wakes the loop only when the loop is waiting for it: when
WRITE_QUEUE_BATCHES batches are already queued (the disk is slower than the wire; this is
what bounds memory), or at `drain`/`abandon`. While the disk keeps up, a batch costs the loop
one queue put. Errors (a failed write, the `check`'s refusal) are kept and raised at the next
`flush` or `drain`; once one happened the thread writes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from shared.storage import write_all

__all__ = ["WRITE_BYTES", "WRITE_QUEUE_BATCHES", "Spool"]

WRITE_BYTES = 1 << 20
"""Body bytes gathered before one batch is handed to the writer thread (and the most held per
batch). 1 MiB, as a tus PATCH's: with 4 MiB batches `POST /upload` took twice the CPU time of
a PATCH of the same body and ran 2-3x slower beside it on a busy machine, even with the heap
kept (BENCHMARKS.md, "Upload speed: the page faults"); a batch written soon after it arrived
is likely still in the CPU's caches. A written batch's pieces are freed together: the gateway
keeps that heap for the next batch (`shared.heap.keep_heap`), or glibc would hand it back to
the kernel and fault it in again for every batch."""
WRITE_QUEUE_BATCHES = 1
"""Batches handed to the writer thread and not yet written before `flush` waits for the disk:
one, as before the thread, so an upload holds at most two batches (this one and the one
gathering) whatever the body's size (docs/guarantees.md, "upload buffers"). Writing a batch
into the page cache is one kernel copy, while receiving it is that and the parser's work, so
the loop should seldom wait; a second queued batch (not measured) would hold a third MiB."""
_STOP = None
"""The writer thread's last queue item: it ends after the batches before it."""


class _Digest(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Spool:
    """Chunks for one file descriptor, written a batch at a time by the spool's own thread.

    `check(written)` runs in the writer thread after each write (a free-space check, say) and
    may raise; `digest` is updated with every byte in order, in the same thread. A failed
    write or check surfaces at the next `flush`/`drain`, and nothing is written after it. The
    thread starts with the first batch and ends at `drain` or `abandon`: at most one per
    upload in progress."""

    def __init__(self, fd: int, check: Callable[[int], None] | None = None,
                 digest: _Digest | None = None, batch: int = WRITE_BYTES) -> None:
        self.fd = fd
        self.check = check
        self.digest = digest
        self.batch = batch
        self.chunks: list[bytes | memoryview] = []
        self.gathered = 0
        self.written = 0
        """Bytes the completed writes put in the file (counted by the writer thread)."""
        self.pending: asyncio.Future[None] | None = None
        """What the event loop waits on while it waits for the writer thread (None otherwise)."""
        self._queue: queue.SimpleQueue[list[bytes | memoryview] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._sent = 0
        """Items put on the queue (batches and the stop)."""
        self._done = 0
        """Items the thread has finished with; `_sent - _done` are in its hands."""
        self._want = 0
        """`_done` the loop waits for (while `pending` is set): the thread wakes it then."""
        self._error: BaseException | None = None
        self._stop = False
        """Write nothing more (`abandon`): queued batches are dropped unwritten."""
        self._closed = False
        """The stop item was sent: the thread ends after what is queued."""

    def add(self, chunk: bytes | memoryview) -> bool:
        """Keep `chunk` (no copy); True once a batch has gathered and `flush` should run."""
        if chunk:
            self.chunks.append(chunk)
            self.gathered += len(chunk)
        return self.gathered >= self.batch

    def _run(self) -> None:
        """The writer thread: batches in order until the stop item."""
        while True:
            chunks = self._queue.get()
            if chunks is not None and self._error is None and not self._stop:
                try:
                    if self.digest is not None:
                        for c in chunks:
                            self.digest.update(c)
                    n = write_all(self.fd, chunks)
                    self.written += n
                    if self.check is not None:
                        self.check(n)
                except BaseException as exc:  # kept for the loop: raised at the next flush
                    self._error = exc
            if chunks is not None:
                chunks.clear()  # the batch's memory goes back now, in this thread
            with self._lock:
                self._done += 1
                waiter = self.pending if self.pending is not None and \
                    self._done >= self._want else None
            if waiter is not None:
                assert self._loop is not None
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    self._loop.call_soon_threadsafe(_wake, waiter)
            if chunks is None:
                return

    def _put(self, item: list[bytes | memoryview] | None) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="upload-writer", daemon=True)
            self._thread.start()
        self._sent += 1
        self._queue.put(item)

    async def _until(self, done: int) -> None:
        """Wait until the thread has finished `done` items."""
        with self._lock:
            if self._done >= done:
                return
            assert self._loop is not None
            self._want = done
            self.pending = waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            with self._lock:
                self.pending = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    async def settle(self) -> None:
        """Wait until every batch handed over is written; a write's error is raised here."""
        await self._until(self._sent)
        self._raise()

    async def flush(self) -> None:
        """Hand the gathered batch to the writer thread, once it has room for one more."""
        self._raise()
        if self.chunks:
            if self._closed:
                raise RuntimeError("flush after drain or abandon")
            if self._sent - self._done >= WRITE_QUEUE_BATCHES:
                await self._until(self._sent - WRITE_QUEUE_BATCHES + 1)
                self._raise()
            chunks, self.chunks, self.gathered = self.chunks, [], 0
            self._put(chunks)

    async def drain(self) -> None:
        """Every byte added is in the file (or the write's error is raised); the thread ends."""
        try:
            await self.flush()
        finally:
            self._close()
        try:
            await self.settle()
        finally:
            self._reap()

    def _close(self) -> None:
        """Send the stop item (once; nothing to stop if no batch ever went)."""
        if self._thread is not None and not self._closed:
            self._closed = True
            self._put(_STOP)

    def _reap(self) -> None:
        """Join the thread once it has finished the stop item: it has only to return then (a
        few bytecodes), so this blocks nothing, and no writer outlives its upload."""
        if self._thread is not None and self._closed and self._done >= self._sent:
            self._thread.join()

    async def abandon(self) -> None:
        """Drop what gathered and what is queued, and wait out the write in progress, whatever
        it raises: after this nothing touches the file, so it may be truncated, closed or
        removed. Waits even when cancelled meanwhile (and then re-raises the cancellation)."""
        self.chunks, self.gathered = [], 0
        if self._thread is None:
            return
        self._stop = True
        self._close()
        cancelled = False
        while self._done < self._sent:
            try:
                await self._until(self._sent)
            except asyncio.CancelledError:
                cancelled = True
        self._reap()
        if cancelled:
            raise asyncio.CancelledError
