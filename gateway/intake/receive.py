"""Receive one uploaded file straight from the socket to disk, whatever its size.

Starlette's `request.form()` spools to a temp file and then copies; at 100 GB that doubles the
disk traffic and hides size and space problems until the end. Here the body is parsed as it
arrives (multipart through python-multipart's low-level parser, or raw bytes), gathered into
a few-MiB buffer and written by a thread while the next buffer fills, so memory stays flat and
the event loop never waits on the disk. A body that declares its length is taken from the
socket by a thread of its own instead (`gateway.intake.splice`: a raw one spliced, a
multipart one read and parsed there, its file part written as it comes). Size and free space
are checked as bytes arrive. The route hands over the body and the headers
(`gateway.api.errors.request_body`); refusals are `gateway.errors` exceptions, answered by
the app's one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import (
    BadRequest,
    ClientGone,
    InsufficientStorage,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from gateway.intake.pacing import Pace
from gateway.intake.splice import SocketBody, splice_body, tap_body
from gateway.intake.spool import WRITE_BYTES, Spool
from shared.errors import MattepipeError
from shared.formats import IMAGE_TYPES, VIDEO_TYPES
from shared.storage import write_all

__all__ = ["Received", "check_free_space", "receive_upload", "upload_extension"]

DISK_CHECK_BYTES = 64 << 20
"""Bytes written between two free-space checks (a statvfs per buffer would cost more)."""
MAX_PART_HEADERS_BYTES = 16 << 10
"""Most bytes of header names and values one form part may carry: a part's headers are held
in memory until its body starts, so a client streaming an endless header gets a 400 here
instead of growing the gateway (python-multipart's own per-line limit depends on its version)."""
_T = TypeVar("_T")
MULTIPART_SLACK = 1 << 20
"""Room for boundaries and other form fields when comparing Content-Length with the limit."""

_DEFAULT_NAMES = {
    "application/zip": "upload.zip",
    "application/x-zip-compressed": "upload.zip",
    "application/x-tar": "upload.tar",
    "application/gzip": "upload.tar.gz",
    "application/x-gzip": "upload.tar.gz",
    "application/x-compressed-tar": "upload.tar.gz",
    "image/jpeg": "image.jpg",
    "image/png": "image.png",
    "image/webp": "image.webp",
    "image/bmp": "image.bmp",
    "image/tiff": "image.tif",
    "image/heic": "image.heic",
    "image/heif": "image.heif",
    "image/avif": "image.avif",
    "video/mp4": "video.mp4",
    "video/quicktime": "video.mov",
    "video/webm": "video.webm",
    "video/x-matroska": "video.mkv",
}
_RAW_TYPES = frozenset(_DEFAULT_NAMES) | {"application/octet-stream"}
_ACCEPTED = (".zip, .tar, .tar.gz/.tgz, an image (.jpg, .png, .webp, .bmp, .tif, .heic/.heif, "
             ".avif) or a video (.mp4, .mov, .webm, .mkv)")


@dataclass
class Received:
    path: Path
    filename: str
    """The client's file name (base name only), kept for the job and for single images."""
    size: int


def upload_extension(filename: str) -> str:
    """`photos.TGZ` → `tar.gz`; 400 for anything we cannot ingest."""
    lower = filename.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    suffix = PurePosixPath(lower).suffix
    if suffix in (".zip", ".tar"):
        return suffix[1:]
    if suffix in IMAGE_TYPES:
        return IMAGE_TYPES[suffix]
    if suffix in VIDEO_TYPES:
        return VIDEO_TYPES[suffix]
    raise BadRequest(f"unsupported file type {filename!r}: send {_ACCEPTED}")


def _base_name(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name.strip()


class _InsufficientStorage(MattepipeError):
    pass


class _Sink:
    """The file being written: a `Spool` (no copies, one write in flight), limits, cleanup."""

    def __init__(self, dest_dir: Path, max_size: int, min_free: int) -> None:
        self.dest_dir = dest_dir
        self.max_size = max_size
        self.min_free = min_free
        self.filename: str | None = None
        self.path: Path | None = None
        self.file: BinaryIO | None = None
        self.spool: Spool | None = None
        self.pre: list[bytes | memoryview] = []
        """Chunks that arrived before the file was opened (the first batch)."""
        self.size = 0
        self.unchecked = 0
        self.full = False
        """A batch has gathered: the caller should `flush`."""

    def start(self, filename: str) -> None:
        self.filename = filename
        self.path = self.dest_dir / f"upload.{upload_extension(filename)}"

    def _count(self, n: int) -> None:
        """`n` more bytes of the file: over `max_size` is a 413."""
        self.size += n
        if self.size > self.max_size:
            raise PayloadTooLarge(f"upload larger than the limit of {self.max_size} bytes")

    def feed(self, data: bytes | memoryview) -> None:
        self._count(len(data))
        if self.spool is None:
            self.pre.append(data)
            self.full = self.size >= WRITE_BYTES
        else:
            self.full = self.spool.add(data)

    def write_now(self, data: bytes | memoryview) -> None:
        """In a tap's thread (`gateway.intake.splice.tap_body`): count, check and write `data`
        at once, after the pieces gathered before (opening the file first if need be)."""
        self._count(len(data))
        chunks = [data]
        if self.file is None:
            assert self.path is not None and self.spool is None
            self.file = self.path.open("wb", buffering=0)
            chunks, self.pre = [*self.pre, data], []  # one writev, no joined copy
        self._check(write_all(self.file.fileno(), chunks))

    def _check(self, written: int) -> None:
        """In the writer (or tap) thread: a statvfs every DISK_CHECK_BYTES, not per write."""
        self.unchecked += written
        if self.unchecked >= DISK_CHECK_BYTES:
            self.unchecked = 0
            if shutil.disk_usage(self.dest_dir).free < self.min_free:
                raise _InsufficientStorage

    async def flush(self) -> None:
        """Start writing the gathered batch (opening the file first if need be)."""
        self.full = False
        if self.spool is None:
            assert self.path is not None
            if self.file is None:  # a tap's thread may have opened it (`write_now`)
                self.file = await asyncio.to_thread(self.path.open, "wb", buffering=0)
            self.spool = Spool(self.file.fileno(), self._check)
            for chunk in self.pre:
                self.spool.add(chunk)
            self.pre = []
        await self._guard(self.spool.flush())

    async def tap(self, sock: int, count: int, pace: Pace, form: _FormReader) -> None:
        """The rest of a multipart body, `count` bytes, read from the socket and parsed in a
        thread of its own (`gateway.intake.splice.tap_body`), the file part written there."""
        form.direct = True
        try:
            await self._guard(tap_body(sock, count, pace, form.parser.write))
        finally:
            form.direct = False

    async def splice(self, sock: int, count: int, pace: Pace) -> None:
        """The rest of a raw body, `count` bytes, straight from the socket into the file
        (`gateway.intake.splice`), after the pieces that arrived before it."""
        if self.size + count > self.max_size:
            raise PayloadTooLarge(f"upload larger than the limit of {self.max_size} bytes")
        await self.flush()  # opens the file; the pieces that came first go first
        assert self.spool is not None and self.file is not None
        await self._guard(self.spool.settle())
        self.size += await self._guard(splice_body(sock, self.file.fileno(), count, pace,
                                                   self._check))

    async def _guard(self, step: Awaitable[_T]) -> _T:
        """Run a spool (or splice) step, turning a full disk into 507."""
        try:
            return await step
        except _InsufficientStorage:
            raise _insufficient(self.min_free) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _insufficient(self.min_free) from exc
            raise

    async def close(self) -> None:
        await self.flush()
        assert self.spool is not None and self.file is not None
        await self._guard(self.spool.drain())
        if (await asyncio.to_thread(shutil.disk_usage, self.dest_dir)).free < self.min_free:
            raise _insufficient(self.min_free)
        await asyncio.to_thread(self.file.close)
        self.file = None

    async def discard(self) -> None:
        if self.spool is not None:
            await self.spool.abandon()
        if self.file is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.file.close)
        if self.path is not None:
            await asyncio.to_thread(self.path.unlink, True)


def _insufficient(min_free: int) -> InsufficientStorage:
    return InsufficientStorage(f"not enough disk space (keeping {min_free} bytes free)")


def check_free_space(where: Path, min_free: int, incoming: int = 0) -> None:
    """507 unless `where` keeps `min_free` bytes free after `incoming` more arrive. Checked
    before the job row is written too: on a full disk even that insert would fail (a 500)."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(where).free - incoming < min_free:
        raise _insufficient(min_free)


class _FormReader:
    """Callbacks for python-multipart: only the part named `file` reaches the sink."""

    def __init__(self, sink: _Sink, boundary: bytes) -> None:
        self.sink = sink
        self.headers: dict[str, str] = {}
        self.field = b""
        self.value = b""
        self.header_bytes = 0
        self.in_file = False
        self.seen_file = False
        self.file_done = False
        self.direct = False
        """The file part goes to `_Sink.write_now` (a tap's thread), not `_Sink.feed`."""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self.headers, self.field, self.value = {}, b"", b""
        self.header_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_room(end - start)
        self.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_room(end - start)
        self.value += data[start:end]

    def _header_room(self, more: int) -> None:
        self.header_bytes += more
        if self.header_bytes > MAX_PART_HEADERS_BYTES:
            raise BadRequest(f"multipart part headers longer than {MAX_PART_HEADERS_BYTES} bytes")

    def _header_end(self) -> None:
        self.headers[self.field.decode("latin-1").lower()] = self.value.decode("utf-8", "replace")
        self.field, self.value = b"", b""

    def _headers_finished(self) -> None:
        _, opts = parse_options_header(self.headers.get("content-disposition", ""))
        if opts.get(b"name") != b"file":
            return
        if self.seen_file:
            raise BadRequest("only one 'file' per upload")
        self.seen_file = self.in_file = True
        name = _base_name(opts.get(b"filename", b"").decode("utf-8", "replace"))
        if not name:
            ctype = parse_options_header(self.headers.get("content-type", ""))[0].decode()
            name = _DEFAULT_NAMES.get(ctype, "")
        if not name:
            raise BadRequest("the 'file' field has no filename")
        self.sink.start(name)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            # A view, not a slice: bytes never change, so the view is as good as a copy.
            part = memoryview(data)[start:end] if isinstance(data, bytes) else data[start:end]
            if self.direct:
                self.sink.write_now(part)
            else:
                self.sink.feed(part)

    def _part_end(self) -> None:
        if self.in_file:
            self.in_file, self.file_done = False, True


def _raw_filename(filename: str | None, ctype: str) -> str:
    given = _base_name(filename or "")
    if given:
        return given
    if ctype in _DEFAULT_NAMES:
        return _DEFAULT_NAMES[ctype]
    raise BadRequest(f"missing filename: pass ?filename=… with {ctype}")


async def _no_body() -> AsyncIterator[bytes]:
    """A body that was spliced: nothing left for the loop to read."""
    return
    yield b""  # an async generator


def _content_length(headers: Mapping[str, str]) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


async def receive_upload(
    body: AsyncIterator[bytes],
    headers: Mapping[str, str],
    dest_dir: Path,
    max_size: int,
    min_free: int,
    filename: str | None = None,
    socket_body: SocketBody | None = None,
    pace: Pace | None = None,
) -> Received:
    """Stream `body` into `dest_dir/upload.<ext>`; a `gateway.errors` refusal on bad input.

    `headers` are the request's (case-insensitive, as Starlette's); `filename` names a raw-body
    upload (`?filename=`). `body` raises `ClientGone` when the client goes away. With
    `socket_body` and `pace`, a raw body with a Content-Length is spliced from the socket
    instead (`gateway.intake.splice`; `pace` is then its idle and rate floor, as `paced` is
    `body`'s); `body` is not read."""
    ctype, opts = parse_options_header(headers.get("content-type", ""))
    content_type = ctype.decode("latin-1")
    multipart = content_type == "multipart/form-data"
    media = content_type.startswith(("image/", "video/"))
    if not multipart and content_type not in _RAW_TYPES and not media:
        raise UnsupportedMediaType(
            f"unsupported content type {content_type or '(none)'!r}: send multipart/form-data "
            f"with a 'file' field, or the raw bytes of {_ACCEPTED}",
        )
    if multipart and not opts.get(b"boundary"):
        raise BadRequest("multipart body without a boundary")
    length = _content_length(headers)
    if length is not None and length > max_size + (MULTIPART_SLACK if multipart else 0):
        raise PayloadTooLarge(f"upload larger than the limit of {max_size} bytes")
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    free = (await asyncio.to_thread(shutil.disk_usage, dest_dir)).free
    if free - (length or 0) < min_free:
        raise _insufficient(min_free)

    sink = _Sink(dest_dir, max_size, min_free)
    form = _FormReader(sink, opts[b"boundary"]) if multipart else None
    if form is None:
        sink.start(_raw_filename(filename, content_type))
    taken = None
    if length and socket_body is not None and pace is not None:
        taken = socket_body.take()
    complete = False
    try:
        if taken is not None:
            assert socket_body is not None and pace is not None
            pieces, sock, rest = taken
            if form is None:
                for piece in pieces:
                    sink.feed(piece)
                await sink.splice(sock, rest, pace)
            else:
                for piece in pieces:
                    form.parser.write(piece)
                await sink.tap(sock, rest, pace, form)
            complete = True
            socket_body.release(True)
            body = _no_body()
        async for chunk in body:
            if form is not None:
                form.parser.write(chunk)
            elif chunk:
                sink.feed(chunk)
            if sink.full:
                await sink.flush()
        if form is not None:
            form.parser.finalize()
            if not form.seen_file:
                raise BadRequest("no 'file' field in the form")
            if not form.file_done:
                raise BadRequest("incomplete multipart body")
        if sink.size == 0:
            raise BadRequest("empty upload")
        await sink.close()
    except MultipartParseError as exc:
        await sink.discard()
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    except ClientGone as exc:
        await sink.discard()
        raise BadRequest("upload interrupted: the client disconnected") from exc
    except BaseException:
        await sink.discard()
        raise
    finally:
        if taken is not None and not complete:
            assert socket_body is not None
            socket_body.release(False)
    assert sink.path is not None and sink.filename is not None
    return Received(path=sink.path, filename=sink.filename, size=sink.size)
