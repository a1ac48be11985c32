"""tus uploads on object storage (STORAGE_URL=s3://…): one tus upload is one S3 multipart upload.

Parts: S3 takes at most 10 000 parts of at least 5 MiB (the last excepted), so the part size
grows with the declared `Upload-Length` (`shared.limits.tus_part_bytes`) and every part but
the last has exactly that size. A PATCH body is gathered into a part and sent while the next
one gathers (at most two parts in memory per PATCH); the last part goes when the final byte
arrives, and the multipart upload is completed into `input/<id>/upload`, the object the job
made of it reads (a job's id is its upload's id: no copy, which S3 would need for a rename).

State, shared by every gateway (several serve the same uploads): the parts' etags are recorded
in the database (`UploadPart`, a row per part, as each is stored unless the PATCH carries a
checksum, then once the body is verified); bytes past the last whole part — a PATCH smaller
than a part, or a body cut off — are kept as the small object `uploads/<id>/tail.<n>`, `n` the
number of parts it follows. The offset is `parts × part size + size of tail.<n>`: a tail left
from an earlier part count is never read (so no crash between a part and the tail's rewrite can
count bytes twice) and goes when the upload does. A gateway that dies mid-PATCH loses only what
it held in memory; HEAD on any gateway answers what the store and the row hold, and the client
resends from there. A tail costs one GET and one PUT per PATCH, so clients should send chunks
of at least a part (tuspy and tus-js-client send the whole file in one PATCH by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import ClientGone, UploadStalled
from gateway.intake.tus_store import tus_error
from shared.limits import tus_part_bytes
from shared.objects import ObjectStore
from shared.storage import INPUT, UPLOADS

__all__ = [
    "PartState",
    "append_parts",
    "discard",
    "object_key",
    "read_state",
    "tail_key",
]

Record = Callable[[int, list[str]], Awaitable[None]]
"""Records parts `first`, `first + 1`, … by their etags (`repo.add_upload_parts`)."""


def object_key(upload_id: str) -> str:
    """The finished upload's object: `input/<id>/upload`, already in the job's folder."""
    return f"{INPUT}/{upload_id}/upload"


def tail_key(upload_id: str, parts: int) -> str:
    """The bytes past part `parts` (`uploads/<id>/tail.<parts>`)."""
    return f"{UPLOADS}/{upload_id}/tail.{parts:05d}"


def _tails(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/"


@dataclass(frozen=True)
class PartState:
    """What the store and the row hold of one upload."""

    length: int
    part_bytes: int
    etags: list[str]
    tail: int
    """Bytes in the tail object that follows the last part."""

    @property
    def offset(self) -> int:
        """Only the final part can be short, and it is stored only with the final byte: parts
        that reach `length` hold all of it."""
        return min(self.length, len(self.etags) * self.part_bytes + self.tail)


def read_state(store: ObjectStore, upload_id: str, length: int,
               etags: list[str] | None) -> PartState:
    """The upload's state from its row's etags and its tail object. Blocking."""
    parts = list(etags or [])
    tail = store.size(tail_key(upload_id, len(parts))) or 0
    return PartState(length, tus_part_bytes(length), parts, tail)


def discard(store: ObjectStore, upload_id: str, multipart_id: str | None,
            completed: bool) -> None:
    """An upload that goes without becoming a job: its multipart upload aborted (or, once
    completed, its object deleted) and its tails. Blocking."""
    if multipart_id and not completed:
        store.abort_multipart(object_key(upload_id), multipart_id)
    if completed:
        store.delete(object_key(upload_id))
    store.delete_prefix(_tails(upload_id))


class _Parts:
    """Parts of one PATCH: numbered after those stored, one upload in flight at a time."""

    def __init__(self, store: ObjectStore, upload_id: str, multipart_id: str,
                 etags: list[str], record: Record, eager: bool) -> None:
        self.store, self.key, self.multipart_id = store, object_key(upload_id), multipart_id
        self.etags = etags
        self.recorded = len(etags)
        self.record = record
        self.eager = eager
        """Record each part as it is stored; off while a checksum is pending (nothing of the
        body counts before it is verified)."""
        self.pending: asyncio.Future[str] | None = None

    async def settle(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            self.etags.append(await pending)
            if self.eager:
                await self.flush()

    async def flush(self) -> None:
        """Record the parts stored but not yet recorded."""
        new = self.etags[self.recorded:]
        if new:
            await self.record(self.recorded + 1, new)
            self.recorded = len(self.etags)

    async def send(self, data: bytes) -> None:
        await self.settle()
        number = len(self.etags) + 1
        self.pending = asyncio.ensure_future(asyncio.to_thread(
            self.store.upload_part, self.key, self.multipart_id, number, data))

    async def abandon(self) -> None:
        """Wait out the part in flight, whatever it raises (a part sent again replaces it)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([pending])
            if pending.done() and not pending.cancelled():
                pending.exception()  # retrieved: no "never retrieved" warning

    async def complete(self) -> None:
        await self.settle()
        parts = [(i + 1, etag) for i, etag in enumerate(self.etags)]
        await asyncio.to_thread(self.store.complete_multipart, self.key, self.multipart_id,
                                parts)


async def append_parts(
    chunks: AsyncIterator[bytes],
    store: ObjectStore,
    upload_id: str,
    multipart_id: str,
    length: int,
    state: PartState,
    checksum: bytes | None,
    record: Record,
) -> int:
    """Append a PATCH body at `state.offset`; the new offset.

    As `gateway.intake.tus_store.append_body` on a file: a body past `length` is a 413, a
    checksum mismatch a 460, a failing store an error — and then nothing of the body counts
    (parts recorded meanwhile are struck off again; the old tail was never touched); a cut or
    stalled body keeps what arrived unless a checksum was announced. The final byte completes
    the multipart upload."""
    tail = tail_key(upload_id, len(state.etags))
    buf = bytearray(await asyncio.to_thread(store.get, tail) if state.tail else b"")
    parts = _Parts(store, upload_id, multipart_id, list(state.etags), record,
                   eager=checksum is None)
    sha1 = hashlib.sha1() if checksum is not None else None
    size = state.part_bytes
    arrived = state.offset

    async def keep() -> None:
        """Parts recorded, the rest as the tail after them; stale tails go."""
        await parts.settle()
        if buf:
            await asyncio.to_thread(store.put, tail_key(upload_id, len(parts.etags)), bytes(buf))
        await parts.flush()
        if len(parts.etags) != len(state.etags):
            await asyncio.to_thread(store.delete, tail)

    start = arrived
    kept = False
    try:
        try:
            async for chunk in chunks:
                if arrived + len(chunk) > length:
                    raise tus_error(413, f"the body goes past Upload-Length ({length} bytes)")
                arrived += len(chunk)
                if sha1 is not None:
                    sha1.update(chunk)
                buf += chunk
                while len(buf) >= size:
                    part = bytes(buf[:size])
                    del buf[:size]
                    await parts.send(part)
        except (ClientGone, UploadStalled):
            if checksum is None:  # a cut body keeps what arrived (tus semantics)
                await keep()
                kept = True
            raise
        if sha1 is not None and sha1.digest() != checksum:
            raise tus_error(460, "checksum mismatch: the body's sha1 differs from Upload-Checksum")
        if arrived < length:
            if arrived > start:
                await keep()
            return arrived
        if buf:
            await parts.send(bytes(buf))
            buf.clear()
        await parts.complete()
        await parts.flush()
        await asyncio.to_thread(store.delete_prefix, _tails(upload_id))
        return arrived
    except BaseException:
        await parts.abandon()
        if not kept and parts.recorded > len(state.etags):
            await asyncio.shield(record(len(state.etags) + 1, []))
        raise
    finally:
        await parts.abandon()
