"""Archive metadata that the standard library would read whole before we see one member.

`tarfile` reads a GNU long-name/long-link (`L`/`K`) or pax (`x`/`g`) header's whole payload
into memory before it hands over the member it describes: a 65 KB `.tar.gz` can claim a
64 MiB name (several GiB for a few MB on the wire), and the gateway is killed for memory.
`zipfile` reads the whole central directory and makes one object per entry before anyone can
count them. Both are checked here from the fixed-size records first, in constant memory.
"""

from __future__ import annotations

import contextlib
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from shared.errors import IntakeError
from shared.limits import NAME_MAX_BYTES

__all__ = [
    "TAR_EXTENSION_CHAIN_MAX",
    "TAR_HEADER_MAX_BYTES",
    "ZIP_DIR_ENTRY_MAX_BYTES",
    "HeaderRefused",
    "ZipDirectory",
    "guarded_tarinfo",
    "read_zip_directory",
]

TAR_HEADER_MAX_BYTES = 64 * 1024
"""Largest payload of one GNU long-name/long-link or pax header we let `tarfile` read (and the
total of all pax global headers of an archive, which `tarfile` accumulates). A real long name
is at most a few KiB (PATH_MAX is 4096); anything bigger is an attack on the gateway's memory."""
TAR_EXTENSION_CHAIN_MAX = 8
"""Extension headers in a row before a real member: tarfile recurses (and keeps every payload)
through such a chain; real archives use one or two (pax + GNU long name)."""
_TAR_EXTENSION_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE}
)  # fmt: skip

_ZIP_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP_CDH = b"PK\x01\x02"
_EOCD_SIZE = 22
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD_SIZE = 56
_CDH_SIZE = 46
_ZIP_COMMENT_MAX = 0xFFFF
_SCAN_CHUNK = 1 << 20
ZIP_DIR_ENTRY_MAX_BYTES = _CDH_SIZE + NAME_MAX_BYTES + 1024
"""Average central-directory bytes per entry we accept: the fixed header, the longest name we
take and room for extra fields and a comment. A directory fatter than this per member is
padding meant to make `zipfile` spend memory, not a real archive."""


class HeaderRefused(IntakeError):
    """An archive's metadata breaks a limit before any member is read; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- tar -----------------------------------------------------------------------------------


def guarded_tarinfo(end_seen: list[bool]) -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses oversized extension headers from their 512-byte block, and
    notes an all-zero end block in `end_seen`.

    `frombuf` parses the header block alone; `tarfile` reads the payload only after it returns,
    so raising there keeps memory flat whatever size the header claims. Sparse maps that go on
    in further blocks (old GNU `S` with extension blocks, pax sparse 1.0) are refused too:
    `tarfile` would read them without a bound, and sparse files are never images anyway.
    """
    state = {"chain": 0, "global": 0}

    class _Guarded(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            if len(buf) == tarfile.BLOCKSIZE and not any(buf):
                end_seen.append(True)
            obj = super().frombuf(buf, encoding, errors)
            if obj.type in _TAR_EXTENSION_TYPES:
                _check_extension(obj, state)
            else:
                state["chain"] = 0
            return obj

        def _proc_sparse(self, tf: tarfile.TarFile) -> Any:
            structs = getattr(self, "_sparse_structs", ((), False, 0))
            if structs[1]:
                raise HeaderRefused("sparse files with extended maps are not supported")
            return getattr(super(), "_proc_sparse")(tf)  # noqa: B009 (private in typeshed)

        def _proc_gnusparse_10(self, *args: Any) -> Any:
            raise HeaderRefused("sparse files (pax format 1.0) are not supported")

    return _Guarded


def _check_extension(obj: tarfile.TarInfo, state: dict[str, int]) -> None:
    kind = {tarfile.GNUTYPE_LONGNAME: "GNU long-name", tarfile.GNUTYPE_LONGLINK: "GNU long-link"}
    label = kind.get(obj.type, "pax")
    if obj.size > TAR_HEADER_MAX_BYTES:
        raise HeaderRefused(f"tar {label} header of {obj.size} bytes is larger than the "
                            f"{TAR_HEADER_MAX_BYTES}-byte limit")
    state["chain"] += 1
    if state["chain"] > TAR_EXTENSION_CHAIN_MAX:
        raise HeaderRefused(f"more than {TAR_EXTENSION_CHAIN_MAX} tar extension headers in a row")
    if obj.type == tarfile.XGLTYPE:
        state["global"] += obj.size
        if state["global"] > TAR_HEADER_MAX_BYTES:
            raise HeaderRefused(f"tar global pax headers total more than "
                                f"{TAR_HEADER_MAX_BYTES} bytes")


# --- zip -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipDirectory:
    entries: int
    """Entries actually found in the central directory (not what the end record claims)."""
    size: int
    """The central directory's size in bytes."""


def _end_record(f: Any, file_size: int) -> tuple[int, int, int, int] | None:
    """(end record position, entries, directory size, directory start), as `zipfile` finds them
    (ZIP64 when present); None when there is no end record (zipfile says why)."""
    tail_len = min(file_size, _EOCD_SIZE + _ZIP_COMMENT_MAX)
    f.seek(file_size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(_ZIP_EOCD)
    if pos < 0 or len(tail) - pos < _EOCD_SIZE:
        return None
    eocd_at = file_size - tail_len + pos
    _, _, _, entries, size, _, _ = struct.unpack("<4H2LH", tail[pos + 4 : pos + _EOCD_SIZE])
    end_at = eocd_at
    locator_at = eocd_at - _ZIP64_LOCATOR_SIZE
    if locator_at >= 0:
        f.seek(locator_at)
        locator = f.read(_ZIP64_LOCATOR_SIZE)
        if locator[:4] == _ZIP64_LOCATOR:
            z64_at = locator_at - _ZIP64_EOCD_SIZE
            f.seek(max(z64_at, 0))
            rec = f.read(_ZIP64_EOCD_SIZE)
            if z64_at < 0 or rec[:4] != _ZIP64_EOCD:
                return None
            entries, size = struct.unpack("<QQ", rec[32:48])
            end_at = z64_at
    # zipfile places the directory right before its end record (data prepended to a zip, as in
    # self-extracting archives, shifts every offset); so do we.
    return eocd_at, entries, size, end_at - size


def read_zip_directory(upload: Path | IO[bytes], max_members: int) -> ZipDirectory | None:
    """Check a zip's member count and directory size before `zipfile` reads the directory.

    The end record's count is checked first (no directory read at all), then the directory is
    walked in 1 MiB chunks, counting real entries, since the end record may lie. Returns None
    when the end record is missing or the directory does not parse: `zipfile` then reports the
    archive as corrupt in its own words. `upload` is a path or an open, seekable file (an
    object store's `open_read`), which is left open.
    """
    with upload.open("rb") if isinstance(upload, Path) else contextlib.nullcontext(upload) as f:
        file_size = f.seek(0, 2)
        found = _end_record(f, file_size)
        if found is None:
            return None
        _, claimed, size, start = found
        if claimed > max_members:
            raise HeaderRefused(f"archive has more than {max_members} members")
        if start < 0 or size < 0:
            return None
        if size > max(claimed, 1) * ZIP_DIR_ENTRY_MAX_BYTES:
            raise HeaderRefused(
                f"zip central directory of {size} bytes is too large for {claimed} members "
                f"(more than {ZIP_DIR_ENTRY_MAX_BYTES} bytes per member)")
        entries = _count_entries(f, start, size, max_members)
    if entries is None:
        return None
    if size > max(entries, 1) * ZIP_DIR_ENTRY_MAX_BYTES:
        raise HeaderRefused(f"zip central directory of {size} bytes is too large for "
                            f"{entries} members")
    return ZipDirectory(entries, size)


def _count_entries(f: Any, start: int, size: int, max_members: int) -> int | None:
    """Walk the central directory's fixed headers, skipping their variable parts."""
    pos, end, entries = start, start + size, 0
    buf, buf_at = b"", start
    while pos + _CDH_SIZE <= end:
        if pos + _CDH_SIZE > buf_at + len(buf):
            f.seek(pos)
            buf, buf_at = f.read(min(_SCAN_CHUNK, end - pos)), pos
            if len(buf) < _CDH_SIZE:
                return None
        head = buf[pos - buf_at : pos - buf_at + _CDH_SIZE]
        if head[:4] != _ZIP_CDH:
            return None
        name_len, extra_len, comment_len = struct.unpack("<3H", head[28:34])
        pos += _CDH_SIZE + name_len + extra_len + comment_len
        entries += 1
        if entries > max_members:
            raise HeaderRefused(f"archive has more than {max_members} members")
    return entries
