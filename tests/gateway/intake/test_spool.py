"""`gateway.intake.spool`: chunks reach the file in order, without copies, a batch at a time,
with one write in flight; a failing write or check surfaces at the next flush, and abandon
leaves nothing running. Real files in tmp_path."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from pathlib import Path

import pytest

from gateway.intake.spool import Spool, write_all


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
