"""`gateway.intake.spool`: chunks reach the file in order, without copies, a batch at a time,
with one write in flight; a failing write or check surfaces at the next flush, and abandon
leaves nothing running. Real files in tmp_path; a real pipe stands for a disk that stalls
(nobody reads it), so "the writer is behind" needs no timing."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import select
import threading
from pathlib import Path

import pytest

from gateway.intake.spool import WRITE_QUEUE_BATCHES, Spool
from shared.storage import write_all


def test_write_all_takes_more_buffers_than_one_writev(tmp_path: Path) -> None:
    chunks: list[bytes | memoryview] = [os.urandom(7) for _ in range(3000)]  # > IOV_MAX
    chunks.append(memoryview(b"--tail of a view--")[2:-2])
    with open(tmp_path / "f", "wb", buffering=0) as f:
        assert write_all(f.fileno(), chunks) == sum(len(c) for c in chunks)
    assert (tmp_path / "f").read_bytes() == b"".join(bytes(c) for c in chunks)


def test_batches_are_written_in_order_and_hashed(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    sizes = [1, 4095, 65536, 300_000, 7, 1 << 20]
    checks: list[int] = []

    async def go(fd: int) -> Spool:
        spool = Spool(fd, checks.append, hashlib.sha1(), batch=1 << 20)
        i = k = 0
        while i < len(data):
            chunk = data[i : i + sizes[k % len(sizes)]]
            i, k = i + len(chunk), k + 1
            if spool.add(chunk):
                await spool.flush()
            # Memory stays flat: never more than a batch (and its last chunk) gathered.
            assert spool.gathered < (1 << 20) + max(sizes)
        await spool.drain()
        return spool

    with open(tmp_path / "f", "wb", buffering=0) as f:
        spool = asyncio.run(go(f.fileno()))
    assert (tmp_path / "f").read_bytes() == data
    assert spool.written == sum(checks) == len(data) and len(checks) >= 4
    assert spool.digest is not None
    assert spool.digest.digest() == hashlib.sha1(data).digest()  # type: ignore[attr-defined]


def test_a_failing_check_surfaces_at_the_next_flush_and_abandon_is_quiet(
    tmp_path: Path,
) -> None:
    def full(_written: int) -> None:
        raise OSError(errno.ENOSPC, "full")

    async def go(fd: int) -> None:
        spool = Spool(fd, full, batch=10)
        assert spool.add(b"x" * 10)
        await spool.flush()  # starts the write; its check fails in the thread
        spool.add(b"y")
        with pytest.raises(OSError) as exc:
            await spool.drain()
        assert exc.value.errno == errno.ENOSPC
        spool.add(b"z" * 100)
        await spool.abandon()  # nothing in flight, nothing raised, gathered dropped
        assert spool.pending is None and spool.chunks == [] and spool.gathered == 0

    with open(tmp_path / "f", "wb", buffering=0) as f:
        asyncio.run(go(f.fileno()))


def test_a_failing_write_surfaces(tmp_path: Path) -> None:
    async def go(fd: int) -> None:
        spool = Spool(fd)
        spool.add(b"abc")
        with pytest.raises(OSError) as exc:
            await spool.drain()
        assert exc.value.errno == errno.EBADF

    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT)
    try:
        asyncio.run(go(fd))
    finally:
        os.close(fd)


def writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "upload-writer"]


def read_exactly(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = os.read(fd, n - len(out))
        assert got, "pipe closed early"
        out += got
    return bytes(out)


BATCH = 256 * 1024
"""Larger than a pipe's buffer (64 KiB): a batch written to a pipe nobody reads blocks."""


def test_a_stalled_disk_stops_the_loop_at_the_bound_not_the_memory() -> None:
    """The writer thread blocks on the first batch; the loop may hand over WRITE_QUEUE_BATCHES
    and then waits in `flush`, holding no more. Once the reader catches up every byte arrives
    in order and the thread ends with `drain`."""
    data = [os.urandom(BATCH) for _ in range(8)]
    r, w = os.pipe()

    async def go() -> Spool:
        spool = Spool(w, batch=BATCH)
        fed = 0

        async def feed() -> None:
            nonlocal fed
            for chunk in data:
                assert spool.add(chunk)
                await spool.flush()
                # Never more in the thread's hands than the bound, whatever the disk does.
                assert spool._sent - spool._done <= WRITE_QUEUE_BATCHES
                fed += 1
            await spool.drain()

        task = asyncio.create_task(feed())
        done, _ = await asyncio.wait([task], timeout=0.5)
        # Blocked on the pipe, not on time: however slow the machine, no more went through.
        assert not done and fed <= WRITE_QUEUE_BATCHES + 1
        assert spool.pending is not None  # the loop waits on the writer, it does not spin
        got = await asyncio.to_thread(read_exactly, r, len(data) * BATCH)
        await task
        assert got == b"".join(data)
        return spool

    try:
        spool = asyncio.run(go())
    finally:
        os.close(r)
        os.close(w)
    assert spool.written == len(data) * BATCH
    assert spool._thread is not None and not spool._thread.is_alive()


def test_abandon_waits_out_the_write_in_progress_and_drops_the_queue() -> None:
    """`abandon` while the thread is stuck in a write: it returns only after that write ends
    (after it nothing touches the file), and the batch queued behind it is never written."""
    first, second = os.urandom(BATCH), os.urandom(BATCH)
    r, w = os.pipe()

    async def go() -> None:
        spool = Spool(w, batch=BATCH)
        spool.add(first)
        await spool.flush()
        # Bytes in the pipe: the thread is inside the first batch's writev (and stuck there).
        await asyncio.to_thread(select.select, [r], [], [], 60)
        spool.add(second)
        flushing = asyncio.create_task(spool.flush())  # waits: the first is still in writev
        await asyncio.sleep(0)  # one loop turn: the task runs up to its wait
        assert spool.pending is not None
        flushing.cancel()  # as a cut client's task is
        with pytest.raises(asyncio.CancelledError):
            await flushing
        spool.add(b"gathered, never written")
        abandoning = asyncio.create_task(spool.abandon())
        done, _ = await asyncio.wait([abandoning], timeout=0.5)
        assert not done  # the first batch is still in the pipe's way
        got = await asyncio.to_thread(read_exactly, r, BATCH)
        await abandoning
        assert got == first and spool.written == BATCH
        assert spool.chunks == [] and spool.pending is None
        assert spool._thread is not None and not spool._thread.is_alive()

    try:
        asyncio.run(go())
    finally:
        os.close(r)
        os.close(w)


def test_the_thread_starts_with_the_first_batch_and_ends_with_drain(tmp_path: Path) -> None:
    before = len(writers())

    async def go(fd: int) -> None:
        spool = Spool(fd, batch=4)
        spool.add(b"ab")
        await spool.flush()
        assert len(writers()) == before + 1  # small body: one batch, one thread
        await spool.drain()
        await spool.abandon()  # after drain: nothing left to stop, returns at once
        empty = Spool(fd)
        await empty.drain()  # an empty body starts no thread at all
        await empty.abandon()
        assert empty._thread is None

    with open(tmp_path / "f", "wb", buffering=0) as f:
        asyncio.run(go(f.fileno()))
    assert (tmp_path / "f").read_bytes() == b"ab"
    assert len(writers()) == before


def test_after_a_failed_write_nothing_more_is_written(tmp_path: Path) -> None:
    """The first batch's check fails (a full disk, say): the batches the loop handed over
    before it learnt of it are dropped, not written after the failure."""
    calls: list[int] = []

    def full_after_first(written: int) -> None:
        calls.append(written)
        raise OSError(errno.ENOSPC, "full")

    async def go(fd: int) -> None:
        spool = Spool(fd, full_after_first, batch=10)
        spool.add(b"1" * 10)
        await spool.flush()
        with pytest.raises(OSError) as exc:
            for _ in range(50):
                spool.add(b"2" * 10)
                await spool.flush()
            await spool.drain()
        assert exc.value.errno == errno.ENOSPC
        await spool.abandon()

    with open(tmp_path / "f", "wb", buffering=0) as f:
        asyncio.run(go(f.fileno()))
    assert calls == [10]
    assert (tmp_path / "f").read_bytes() == b"1" * 10
