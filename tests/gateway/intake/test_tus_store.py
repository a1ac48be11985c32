"""`gateway.intake.tus_store.append_body` on its own (the protocol is tests/gateway/api/
test_tus.py): a long PATCH body holds two write batches at most, the sha1 is checked when
announced, and a mismatch truncates back to the offset. Real files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.intake.tus_store import TUS_WRITE_BYTES, append_body

PIECE = os.urandom(256 * 1024)
PIECES = 96  # 24 MiB


async def body() -> AsyncIterator[bytes]:
    for _ in range(PIECES):
        yield bytes(bytearray(PIECE))  # a new object each time, as the socket gives


def test_memory_stays_flat_and_bytes_land_in_order(tmp_path: Path) -> None:
    path = tmp_path / "u"
    path.write_bytes(b"head")
    tracemalloc.start()
    try:
        size = asyncio.run(append_body(body(), path, 4, 4 + PIECES * len(PIECE), None, 0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == path.stat().st_size == 4 + PIECES * len(PIECE)
    assert path.read_bytes() == b"head" + PIECE * PIECES
    assert peak < 4 * TUS_WRITE_BYTES, peak


def test_checksum_is_verified_and_a_mismatch_truncates(tmp_path: Path) -> None:
    path = tmp_path / "u"
    path.write_bytes(b"")
    good = hashlib.sha1(PIECE * PIECES).digest()
    length = PIECES * len(PIECE)
    assert asyncio.run(append_body(body(), path, 0, length, good, 0)) == length
    path.write_bytes(b"")
    with pytest.raises(GatewayError) as exc:
        asyncio.run(append_body(body(), path, 0, length, hashlib.sha1(b"x").digest(), 0))
    assert exc.value.status_code == 460
    assert path.stat().st_size == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_write_failing_in_the_writer_thread_is_507(tmp_path: Path) -> None:
    """A PATCH whose writes fail in the writer thread (ENOSPC from /dev/full) mid-body: a 507
    with `Tus-Resumable`, and no writer thread left behind."""
    path = tmp_path / "u"
    path.symlink_to("/dev/full")
    before = [t for t in threading.enumerate() if t.name == "upload-writer"]
    with pytest.raises(GatewayError) as exc:
        asyncio.run(append_body(body(), path, 0, PIECES * len(PIECE), None, 0))
    assert exc.value.status_code == 507 and "disk space" in str(exc.value.detail)
    assert exc.value.headers["Tus-Resumable"] == "1.0.0"
    assert [t for t in threading.enumerate() if t.name == "upload-writer"] == before
