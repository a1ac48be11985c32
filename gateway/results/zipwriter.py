"""A streaming zip writer of stored members whose memory does not grow with the member count.

The download of a 100 000-image job is a zip of 200 000 members. A general zip library keeps
an entry object per member until the central directory is written at the end (the gateway
grew by ~90 MB for such a job, issue 17). Here each member's central-directory record is
appended, as the bytes it will be, to a spooled temporary file (in memory up to
CENTRAL_IN_MEMORY_BYTES, then on disk) and copied out at the end: memory is bounded by design.

Members are stored (PNG and JPEG do not deflate) with their size known before their first
byte (the caller stats them), so the whole zip's length is known in advance (`ZipSizer`
mirrors the layout byte for byte, for Content-Length); the CRC-32 is computed while the data
streams and written after it in a data descriptor (flag bit 3), by zlib-ng (`zlib_ng`: its
CRC-32 uses the CPU's carry-less multiply, ~8× the speed of the standard library's zlib; the
CRC was a sixth of a tiny-image zip's cost, issue 17's fifth download pass). ZIP64 records
appear only where a size, an offset or the member count needs them, as Python's zipfile
writes them.
"""

from __future__ import annotations

import functools
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator

from zlib_ng.zlib_ng import crc32

__all__ = ["CENTRAL_IN_MEMORY_BYTES", "CENTRAL_OVERHEAD", "MEMBER_OVERHEAD", "ZIP64_LIMIT",
           "ZipSizeMismatch", "ZipSizer", "ZipWriter", "dos_time", "end_records"]

CENTRAL_IN_MEMORY_BYTES = 4 * 1024 * 1024
"""Central-directory bytes kept in memory before they spill to a temporary file: a zip of up
to ~40 000 members never touches the disk for it; a bigger one costs no memory for it."""

ZIP64_LIMIT = 0xFFFFFFFF
"""Sizes and offsets from here on need ZIP64 fields."""
_ZIP64_LIMIT = ZIP64_LIMIT
_COUNT_LIMIT = 0xFFFF
_FLAGS = 0x0008 | 0x0800  # sizes and CRC in a data descriptor; names are UTF-8
_STORED = 0
_VERSION = 20
_VERSION_ZIP64 = 45
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix, so the external attributes are a file mode
_FILE_MODE = (0o100644 << 16)
_COPY_BLOCK = 1024 * 1024
_RECORDS_HELD = 512
"""Central records gathered before one write to the spool (~50 KB with 50-byte names): a
`SpooledTemporaryFile.write` per member was a visible share of a tiny-image zip's cost."""

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_DESCRIPTOR = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_LOCAL_PACK = _LOCAL.pack
_CENTRAL_PACK = _CENTRAL.pack
_DESCRIPTOR_PACK = _DESCRIPTOR.pack
"""Bound once: `whole` packs three records per member (issue 17, the download's third pass)."""
_SMALL_LIMIT = _ZIP64_LIMIT
"""A member starting and ending in the first 4 GiB with a size below it needs no ZIP64
field (`whole`'s short way)."""
MEMBER_OVERHEAD = _LOCAL.size + _DESCRIPTOR.size
"""A member's bytes besides its name and its data (its local header and its descriptor),
while it needs no ZIP64 field."""
CENTRAL_OVERHEAD = _CENTRAL.size
"""A member's central record's bytes besides its name, while it needs no ZIP64 field."""
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")


class ZipSizeMismatch(OSError):
    """A member's bytes did not match the size announced for it (the file changed between
    the sizing and the sending): the zip already sent cannot be completed."""


def dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) in MS-DOS form for a POSIX time, clamped to 1980–2107 as zip allows."""
    t = time.localtime(mtime)
    year = min(max(t.tm_year, 1980), 2107)
    if year != t.tm_year:
        return (0, (year - 1980) << 9 | 1 << 5 | 1)
    return (t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
            (year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday)


_dos_second = functools.lru_cache(maxsize=4096)(dos_time)
"""`dos_time` of a whole second, remembered: a job's outputs were written within a few
hours, and `time.localtime` per member was a visible part of a tiny-image zip's cost."""


def _local_extra(size: int) -> bytes:
    return struct.pack("<HHQQ", 1, 16, size, size) if size >= _ZIP64_LIMIT else b""


def _central_extra(size: int, offset: int) -> bytes:
    fields = []
    if size >= _ZIP64_LIMIT:
        fields += [size, size]
    if offset >= _ZIP64_LIMIT:
        fields.append(offset)
    if not fields:
        return b""
    return struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields)


def _member_length(name: bytes, size: int) -> int:
    """Local header, data and descriptor of one member."""
    descriptor = _DESCRIPTOR64.size if size >= _ZIP64_LIMIT else _DESCRIPTOR.size
    return _LOCAL.size + len(name) + len(_local_extra(size)) + size + descriptor


def _central_length(name: bytes, size: int, offset: int) -> int:
    return _CENTRAL.size + len(name) + len(_central_extra(size, offset))


def end_records(count: int, central_size: int, central_offset: int) -> bytes:
    """The end of central directory record, with the ZIP64 ones before it when needed."""
    zip64 = (count >= _COUNT_LIMIT or central_size >= _ZIP64_LIMIT
             or central_offset >= _ZIP64_LIMIT)
    out = b""
    if zip64:
        end64_offset = central_offset + central_size
        out += _END64.pack(0x06064B50, _END64.size - 12, _MADE_BY, _VERSION_ZIP64, 0, 0,
                           count, count, central_size, central_offset)
        out += _LOCATOR64.pack(0x07064B50, 0, end64_offset, 1)
    out += _END.pack(0x06054B50, 0, 0, min(count, _COUNT_LIMIT), min(count, _COUNT_LIMIT),
                     min(central_size, _ZIP64_LIMIT), min(central_offset, _ZIP64_LIMIT), 0)
    return out


class ZipSizer:
    """The exact length of the zip `ZipWriter` will write for the same members, in the same
    order, computed from names and sizes alone (nothing kept per member)."""

    def __init__(self) -> None:
        self.offset = 0
        self.central = 0
        self.count = 0

    def add(self, name: str, size: int) -> None:
        raw = name.encode()
        if size < _ZIP64_LIMIT and self.offset < _ZIP64_LIMIT:  # no ZIP64 field: the sum
            self.central += _CENTRAL.size + len(raw)
            self.offset += _LOCAL.size + len(raw) + size + _DESCRIPTOR.size
        else:
            self.central += _central_length(raw, size, self.offset)
            self.offset += _member_length(raw, size)
        self.count += 1

    def add_many(self, count: int, data_bytes: int, name_bytes: int) -> bool:
        """`count` members at once from their sums (names' UTF-8 bytes and data), as `add`
        would count them one by one while no ZIP64 field is needed: True when the members
        end before 4 GiB (so each one starts there, and none needs a ZIP64 field); False,
        nothing counted, when they would not (the caller sizes them one by one)."""
        offset = self.offset + count * (_LOCAL.size + _DESCRIPTOR.size) + name_bytes + data_bytes
        if offset >= _ZIP64_LIMIT:
            return False
        self.offset = offset
        self.central += count * _CENTRAL.size + name_bytes
        self.count += count
        return True

    @property
    def size(self) -> int:
        return self.offset + self.central + len(end_records(self.count, self.central,
                                                             self.offset))


class ZipWriter:
    """Writes a stored zip as a sequence of byte pieces: `member` per file, then `finish`.

    Not thread-safe; one writer per zip. `close` drops the spooled central directory (also
    done by `finish`)."""

    def __init__(self) -> None:
        self.offset = 0
        self.count = 0
        self._central = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by finish/close)
            max_size=CENTRAL_IN_MEMORY_BYTES)
        self._central_size = 0
        self._records: list[bytes] = []

    def member(self, name: str, size: int, data: Iterable[bytes], mtime: float = 0.0
               ) -> Iterator[bytes]:
        """One member: its local header, `data` (exactly `size` bytes, else
        ZipSizeMismatch), its descriptor; its central record is set aside for `finish`."""
        raw, start, stamp, header = self._header(name, size, mtime)
        yield header
        crc = 0
        sent = 0
        for piece in data:
            sent += len(piece)
            if sent > size:
                raise ZipSizeMismatch(f"{name}: more than the {size} bytes announced")
            crc = crc32(piece, crc)
            self.offset += len(piece)
            yield piece
        if sent != size:
            raise ZipSizeMismatch(f"{name}: {sent} bytes, {size} announced")
        yield self._end_member(raw, size, crc, start, stamp)

    def whole(self, name: str, size: int, data: bytes, mtime: float = 0.0) -> bytes:
        """`member` of a file read whole (a small one): header, data and descriptor as one
        piece, so a zip of tiny images costs one bytes object per member, not three pieces
        and a generator."""
        if len(data) != size:
            raise ZipSizeMismatch(f"{name}: {len(data)} bytes, {size} announced")
        start = self.offset
        if start < _SMALL_LIMIT and size < _SMALL_LIMIT:  # no ZIP64 field: one pack each
            raw = name.encode()
            n = len(raw)
            t, d = _dos_second(int(mtime))
            crc = crc32(data)
            self._records.append(_CENTRAL_PACK(0x02014B50, _MADE_BY, _VERSION, _FLAGS, _STORED,
                                               t, d, crc, size, size, n, 0, 0, 0, 0,
                                               _FILE_MODE, start) + raw)
            self._central_size += _CENTRAL.size + n
            if len(self._records) >= _RECORDS_HELD:
                self._spool()
            self.count += 1
            self.offset = start + _LOCAL.size + n + size + _DESCRIPTOR.size
            return b"".join((_LOCAL_PACK(0x04034B50, _VERSION, _FLAGS, _STORED, t, d, 0, size,
                                         size, n, 0), raw, data,
                             _DESCRIPTOR_PACK(0x08074B50, crc, size, size)))
        raw, start, stamp, header = self._header(name, size, mtime)
        self.offset += size
        return b"".join((header, data, self._end_member(raw, size, crc32(data), start,
                                                         stamp)))

    def wholes(self, files: Iterable[tuple[str, bytes, float]], out: list[bytes]) -> None:
        """`whole` of each (name, data, mtime), appended to `out`: one call per task, not
        per member (a download's per-member work, issue 17).

        A member without ZIP64 fields goes into `out` as three pieces (header and name, the
        data object itself, descriptor) rather than one joined: its data is then copied once,
        by the caller's join of `out` into a ~1 MiB piece, not twice (issue 17, the fourth
        pass: the second copy of every byte was a visible share of a zip of 5 KB images)."""
        whole, records, append, pack_local = self.whole, self._records, out.append, _LOCAL_PACK
        for name, data, mtime in files:
            start, size = self.offset, len(data)
            if start >= _SMALL_LIMIT or size >= _SMALL_LIMIT:
                append(whole(name, size, data, mtime))
                continue
            raw = name.encode()
            n = len(raw)
            t, d = _dos_second(int(mtime))
            crc = crc32(data)
            records.append(_CENTRAL_PACK(0x02014B50, _MADE_BY, _VERSION, _FLAGS, _STORED, t, d,
                                         crc, size, size, n, 0, 0, 0, 0, _FILE_MODE, start)
                           + raw)
            self._central_size += _CENTRAL.size + n
            if len(records) >= _RECORDS_HELD:
                self._spool()
            self.count += 1
            self.offset = start + _LOCAL.size + n + size + _DESCRIPTOR.size
            append(pack_local(0x04034B50, _VERSION, _FLAGS, _STORED, t, d, 0, size, size, n, 0)
                   + raw)
            append(data)
            append(_DESCRIPTOR_PACK(0x08074B50, crc, size, size))

    def _header(self, name: str, size: int, mtime: float
                ) -> tuple[bytes, int, tuple[int, int], bytes]:
        """(name's bytes, the member's offset, its DOS time, its local header), the offset
        moved past the header."""
        raw = name.encode()
        stamp = _dos_second(int(mtime))
        extra = _local_extra(size)
        small = min(size, _ZIP64_LIMIT)
        version = _VERSION_ZIP64 if size >= _ZIP64_LIMIT else _VERSION
        start = self.offset
        header = _LOCAL.pack(0x04034B50, version, _FLAGS, _STORED, stamp[0], stamp[1], 0, small,
                             small, len(raw), len(extra)) + raw + extra
        self.offset += len(header)
        return raw, start, stamp, header

    def _end_member(self, raw: bytes, size: int, crc: int, start: int,
                    stamp: tuple[int, int]) -> bytes:
        """The member's descriptor (the offset moved past it); its central record spooled."""
        if size >= _ZIP64_LIMIT:
            descriptor = _DESCRIPTOR64.pack(0x08074B50, crc, size, size)
        else:
            descriptor = _DESCRIPTOR.pack(0x08074B50, crc, size, size)
        self.offset += len(descriptor)
        small = min(size, _ZIP64_LIMIT)
        cextra = _central_extra(size, start)
        record = _CENTRAL.pack(0x02014B50, _MADE_BY, _VERSION_ZIP64 if cextra else _VERSION,
                               _FLAGS, _STORED, stamp[0], stamp[1], crc, small, small, len(raw),
                               len(cextra), 0, 0, 0, _FILE_MODE, min(start, _ZIP64_LIMIT))
        self._records.append(record + raw + cextra)
        self._central_size += _CENTRAL.size + len(raw) + len(cextra)
        if len(self._records) >= _RECORDS_HELD:
            self._spool()
        self.count += 1
        return descriptor

    def finish(self) -> Iterator[bytes]:
        """The central directory (read back from the spool) and the end records."""
        central_offset = self.offset
        yield from self.central()
        end = end_records(self.count, self._central_size, central_offset)
        self.offset += len(end)
        yield end

    def central(self) -> Iterator[bytes]:
        """The central records of the members written so far, read back from the spool, and
        nothing after them (`finish` adds the end records; a zip's worker process sends its
        part of the directory this way, `gateway.results.zip_processes`). Closes the spool."""
        try:
            self._spool()
            self._central.seek(0)
            while block := self._central.read(_COPY_BLOCK):
                self.offset += len(block)
                yield block
        finally:
            self.close()

    @property
    def central_size(self) -> int:
        """The bytes `central` will yield."""
        return self._central_size

    def _spool(self) -> None:
        """The records held so far into the spool, in one write."""
        self._central.write(b"".join(self._records))
        self._records.clear()

    def close(self) -> None:
        self._records.clear()
        self._central.close()
