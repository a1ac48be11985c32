"""Archive member names and magic bytes: what a name may be, and what a file's head says it is.

Names are rebuilt component by component rather than filtered, so whatever an archive claims
(absolute, `..`, Windows drives and separators, non-UTF-8 bytes, control characters), what
comes out is either a plain relative posix path or a reason.
"""

from __future__ import annotations

import re

from shared.errors import IntakeError
from shared.limits import NAME_MAX_BYTES, NAME_PART_MAX_BYTES, TAR_BLOCK_BYTES, USTAR_MAGIC_SLICE

__all__ = [
    "ARCHIVE_SUFFIXES",
    "COMPRESSED_MAGIC",
    "ZIP_MAGIC",
    "BadName",
    "clean_name",
    "fix_encoding",
    "is_image_magic",
    "is_v7_tar",
    "looks_like_archive",
]

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_OTHER_ARCHIVE_MAGIC = (b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"\x28\xb5\x2f\xfd")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
_ISOBMFF_IMAGE_BRANDS = frozenset({
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis",
})  # fmt: skip
"""HEIF/AVIF major brands (`ftyp` box at offset 4); a video's brands (isom, mp42, qt) differ."""
ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".7z", ".rar", ".zst"}
)
_JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_image_magic(head: bytes) -> bool:
    return (
        head.startswith(_IMAGE_MAGIC)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in _ISOBMFF_IMAGE_BRANDS)
    )


def is_v7_tar(head: bytes) -> bool:
    """A pre-POSIX tar has no magic; its header checksum is the only tell."""
    if len(head) < TAR_BLOCK_BYTES or head[0] == 0:
        return False
    try:
        stored = int(head[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * 32 + sum(head[156:TAR_BLOCK_BYTES])


def looks_like_archive(head: bytes) -> bool:
    return (
        head.startswith(ZIP_MAGIC + COMPRESSED_MAGIC + _OTHER_ARCHIVE_MAGIC)
        or head[USTAR_MAGIC_SLICE] == b"ustar"
    )


def fix_encoding(name: str) -> str:
    """Tar names that were not UTF-8 arrive with surrogate escapes; read them as cp437."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("cp437")
    except UnicodeEncodeError:
        return name.encode("utf-8", "replace").decode("utf-8")


class BadName(IntakeError, ValueError):
    """A member name that cannot be made safe; the message is the reason."""


def clean_name(raw: str) -> str | None:
    """Archive name → safe posix relative path; None for junk that is skipped silently."""
    name = fix_encoding(raw)
    if "\x00" in name:
        raise BadName("invalid name (NUL byte)")
    name = name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        raise BadName("absolute path not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadName("path with '..' not allowed")
    if not parts:
        return None
    if any(p == "__MACOSX" or p.startswith(".") for p in parts):
        return None
    if parts[-1].lower() in _JUNK_NAMES:
        return None
    if _CONTROL.search(name):
        raise BadName("control characters in name")
    if (any(len(p.encode("utf-8")) > NAME_PART_MAX_BYTES for p in parts)
            or len(name.encode("utf-8")) > NAME_MAX_BYTES):
        raise BadName("name too long")
    return "/".join(parts)
