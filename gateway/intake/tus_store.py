"""The tus 1.0 server's mechanics: metadata, per-upload locks, and appending a PATCH body.

The offset of an upload is the size of its file on disk, never a number kept beside it: after
a crash or a cut connection whatever reached the disk is what the client resumes from, and no
stored counter can disagree with the bytes. Appends run in worker threads, a batch at a time
as the body arrives (`gateway.intake.spool`), under a per-upload lock so two PATCHes never
interleave.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import shutil
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from gateway.db.locks import UPLOAD_LOCK_SPACE, ChoreLocks, lock_key
from gateway.errors import ClientGone, GatewayError, UploadStalled, error_for_status
from gateway.intake.pacing import Pace
from gateway.intake.splice import SocketBody, splice_body
from gateway.intake.spool import Spool
from shared.errors import Busy
from shared.timing import UPLOAD_LOCK_POLL_S

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "TUS_VERSION",
    "TUS_WRITE_BYTES",
    "UploadBusy",
    "UploadLocks",
    "append_body",
    "file_size",
    "http_date",
    "parse_checksum",
    "parse_metadata",
    "tus_error",
]

TUS_VERSION = "1.0.0"
TUS_WRITE_BYTES = 1 << 20
"""A PATCH body's write batch: smaller than `POST /upload`'s, because what reached the disk is
what a client resumes from, and a gateway that dies keeps everything but the last batch."""
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = "sha1"


def tus_error(code: int, detail: str, **headers: str) -> GatewayError:
    """A refusal (`gateway.errors`) that still carries `Tus-Resumable`, as every tus answer
    must; `code` picks its class."""
    return error_for_status(code, detail, {"Tus-Resumable": TUS_VERSION, **headers})


def http_date(ts: float) -> str:
    """`Upload-Expires` is an RFC 9110 date."""
    return formatdate(ts, usegmt=True)


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata: key b64,key2 b64,flag` → {key: value}; 400 for anything malformed."""
    out: dict[str, str] = {}
    for pair in (header or "").split(","):
        parts = pair.strip().split(" ")
        if parts == [""]:
            continue
        if len(parts) > 2 or not parts[0]:
            raise tus_error(400, f"malformed Upload-Metadata pair {pair.strip()!r}")
        key = parts[0]
        try:
            value = base64.b64decode(parts[1], validate=True).decode() if len(parts) == 2 else ""
        except (binascii.Error, UnicodeDecodeError):
            raise tus_error(400, f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
        if key in out:
            raise tus_error(400, f"Upload-Metadata key {key!r} given twice")
        out[key] = value
    return out


def parse_checksum(header: str | None) -> bytes | None:
    """`Upload-Checksum: sha1 <base64>` → the 20-byte digest (None without the header)."""
    if header is None:
        return None
    algo, _, value = header.strip().partition(" ")
    if algo.lower() != "sha1":
        raise tus_error(400, f"unsupported checksum algorithm {algo!r}; use sha1")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise tus_error(400, "Upload-Checksum value is not base64") from None
    if len(digest) != hashlib.sha1().digest_size:
        raise tus_error(400, "Upload-Checksum is not a sha1 digest")
    return digest


def file_size(path: Path) -> int | None:
    """The upload's offset; None when its file is gone."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


class UploadBusy(Busy):
    """Another request holds the upload for longer than we were willing to wait."""


class UploadLocks:
    """One asyncio.Lock per upload id, dropped when nobody holds or waits for it; with
    `chores` (several gateways on one Postgres) also the upload's advisory lock, so a PATCH on
    one gateway and a PATCH (or `POST /jobs`, the sweeper) on another take turns too."""

    def __init__(self, chores: ChoreLocks | None = None) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._chores = chores

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, wait: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        self._users[upload_id] = self._users.get(upload_id, 0) + 1
        deadline = asyncio.get_running_loop().time() + wait
        try:
            if not lock.locked():
                await lock.acquire()  # free: no wait_for, which gives up at once on wait=0
            else:
                try:
                    await asyncio.wait_for(lock.acquire(), wait)
                except TimeoutError:
                    raise UploadBusy(upload_id) from None
            try:
                async with self._across_gateways(upload_id, deadline):
                    yield
            finally:
                lock.release()
        finally:
            self._users[upload_id] -= 1
            if not self._users[upload_id]:
                del self._users[upload_id], self._locks[upload_id]

    @contextlib.asynccontextmanager
    async def _across_gateways(self, upload_id: str, deadline: float) -> AsyncIterator[None]:
        """The upload's advisory lock until the block ends (polled until `deadline`: another
        gateway's request may be about to end). Nothing on SQLite or without `chores`."""
        if self._chores is None or not self._chores.shared:
            yield
            return
        key = lock_key(UPLOAD_LOCK_SPACE, upload_id)
        loop = asyncio.get_running_loop()
        while not await self._chores.take(key):
            if loop.time() >= deadline:
                raise UploadBusy(upload_id)
            await asyncio.sleep(min(UPLOAD_LOCK_POLL_S, max(deadline - loop.time(), 0.0)))
        try:
            yield
        finally:
            await self._chores.give(key)


async def _nothing() -> AsyncIterator[bytes]:
    """The body once spliced: nothing left for the loop to read."""
    return
    yield b""  # an async generator


def _open_append(path: Path) -> BinaryIO:
    # Unbuffered: every write reaches the OS at once, so the file size is the true offset.
    return open(path, "r+b", buffering=0)  # closed by append_body


def _free_space_check(root: Path, min_free: int) -> Callable[[int], None]:
    def check(_written: int) -> None:
        if shutil.disk_usage(root).free < min_free:
            raise OSError(errno.ENOSPC, "free space below MIN_FREE_DISK")

    return check


async def append_body(
    chunks: AsyncIterator[bytes],
    path: Path,
    offset: int,
    length: int,
    checksum: bytes | None,
    min_free: int,
    socket_body: SocketBody | None = None,
    pace: Pace | None = None,
) -> int:
    """Append a PATCH body at `offset` (the file's size) and return the new size.

    With `socket_body` and `pace` and no checksum to verify, the body is spliced from the
    socket instead of read from `chunks` (`gateway.intake.splice`, as a raw `POST /upload`'s;
    `pace` is its idle and rate floor); what a cut or stall leaves is kept all the same.

    The body goes through a `Spool` (`gateway.intake.spool`): kept as it arrived, written a
    batch at a time in a worker thread, hashed there only when a checksum was announced.
    A client that disconnects keeps every byte that arrived, unless it announced a checksum
    (then the unverifiable part is dropped). A checksum mismatch (460), a body past
    `Upload-Length` (413) or a full disk (507) truncate the file back to `offset`."""
    f = await asyncio.to_thread(_open_append, path)
    sha1 = hashlib.sha1() if checksum is not None else None
    spool_check = _free_space_check(path.parent, min_free)
    spool = Spool(f.fileno(), spool_check, sha1, TUS_WRITE_BYTES)
    arrived = offset
    keep = True
    spliced = 0
    taken = None
    if socket_body is not None and pace is not None and checksum is None:
        taken = socket_body.take()
    complete = False
    try:
        await asyncio.to_thread(f.seek, offset)
        try:
            if taken is not None:
                assert socket_body is not None and pace is not None
                pieces, sock, rest = taken
                if arrived + sum(map(len, pieces)) + rest > length:
                    raise tus_error(413, f"the body goes past Upload-Length ({length} bytes)")
                for piece in pieces:
                    arrived += len(piece)
                    spool.add(piece)
                await spool.flush()
                await spool.settle()  # the pieces that came first go first
                spliced = await splice_body(sock, f.fileno(), rest, pace, spool_check)
                complete = True
                socket_body.release(True)
            async for chunk in chunks if taken is None else _nothing():
                if arrived + len(chunk) > length:
                    raise tus_error(413, f"the body goes past Upload-Length ({length} bytes)")
                arrived += len(chunk)
                if spool.add(chunk):
                    await spool.flush()
        except (ClientGone, UploadStalled):
            # A cut or stalled body keeps what arrived (tus semantics) and frees its buffer.
            if checksum is not None:
                raise
            await spool.drain()
            raise
        await spool.drain()
        if sha1 is not None and sha1.digest() != checksum:
            raise tus_error(460, "checksum mismatch: the body's sha1 differs from Upload-Checksum")
        return offset + spool.written + spliced
    except OSError as exc:
        keep = False
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise tus_error(507, f"not enough disk space (keeping {min_free} bytes free)") from exc
        raise
    except (ClientGone, UploadStalled):
        keep = checksum is None
        raise
    except BaseException:
        keep = False
        raise
    finally:
        if taken is not None and not complete:
            assert socket_body is not None
            socket_body.release(False)
        await spool.abandon()  # nothing in flight once the file is truncated or closed
        with contextlib.suppress(OSError):
            if not keep:
                await asyncio.shield(asyncio.to_thread(f.truncate, offset))
            await asyncio.to_thread(f.close)
