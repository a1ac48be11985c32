"""What `mattepipe run/upload` sends: a file as it is, or a folder packed on the fly.

A folder becomes a STORED zip stream (images do not compress) that is never written to disk.
The stream is deterministic — sorted members, each stamped with its own mtime — so its size
is known before the first byte (tus needs `Upload-Length`) and an interrupted upload resumes
by building the same stream again and skipping the bytes the server already holds. Skipping
still reads those files (the zip's CRCs are computed on the way); that is disk speed, not
network speed. A fingerprint of the tree (paths, sizes, mtimes, modes) tells a resumed run
whether the folder is still the one it started to send.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zipstream import ZIP_STORED, ZipStream

from mattepipe.client.gateway import content_type_for

__all__ = ["BLOCK", "Source", "folder_members", "open_source", "skip_bytes"]

BLOCK = 1024 * 1024
"""Read size for a plain file."""


@dataclass(frozen=True)
class Source:
    """One thing to upload: `size` bytes named `name`, readable from any offset."""

    path: Path
    name: str
    """The upload's file name: the file's own, or `<folder>.zip`."""
    size: int
    fingerprint: str
    content_type: str
    members: tuple[tuple[str, Path], ...] = ()
    """(name in the zip, file) for a folder; empty for a plain file."""

    @property
    def is_folder(self) -> bool:
        return bool(self.members)

    def read_from(self, offset: int = 0) -> Iterator[bytes]:
        """The bytes from `offset` to the end, in blocks of no fixed size."""
        if not 0 <= offset <= self.size:
            raise ValueError(f"offset {offset} outside 0..{self.size}")
        if self.is_folder:
            return skip_bytes(iter(_zip_stream(self.members)), offset)
        return _file_from(self.path, offset)


def folder_members(folder: Path) -> list[tuple[str, Path]]:
    """Every regular file below `folder` as (posix relative path, path), sorted; hidden files
    and folders (`.DS_Store`, `.git`) left out, symlinked files followed, symlinked folders not
    (no loops, no surprises from outside the tree)."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        here = Path(root)
        for name in files:
            p = here / name
            if name.startswith(".") or not p.is_file():
                continue
            found.append((p.relative_to(folder).as_posix(), p))
    found.sort(key=lambda m: m[0])
    return found


def _zip_stream(members: tuple[tuple[str, Path], ...]) -> ZipStream:
    zs = ZipStream(compress_type=ZIP_STORED, sized=True)
    for arcname, path in members:
        zs.add_path(str(path), arcname, recurse=False)
    return zs


def _file_from(path: Path, offset: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        while block := f.read(BLOCK):
            yield block


def skip_bytes(blocks: Iterator[bytes], n: int) -> Iterator[bytes]:
    """`blocks` without its first `n` bytes."""
    for block in blocks:
        if n >= len(block):
            n -= len(block)
            continue
        yield block[n:] if n else block
        n = 0
        yield from blocks
        return


def _fingerprint(entries: list[tuple[str, os.stat_result]]) -> str:
    h = hashlib.sha256()
    for name, st in entries:
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{stat.S_IMODE(st.st_mode)}\n"
                 .encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def open_source(path: Path) -> Source:
    """The upload for `path`: an archive or image as it is, a folder as a zip stream.
    Raises FileNotFoundError / ValueError with a message fit for the user."""
    path = path.expanduser().absolute()
    if path.is_file():
        st = path.stat()
        return Source(path=path, name=path.name, size=st.st_size,
                      fingerprint=_fingerprint([(path.name, st)]),
                      content_type=content_type_for(path))
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    members = tuple(folder_members(path))
    if not members:
        raise ValueError(f"folder {path} holds no files (hidden ones are left out)")
    entries = [(name, p.stat()) for name, p in members]
    size = len(_zip_stream(members))
    return Source(path=path, name=f"{path.name or 'upload'}.zip", size=size,
                  fingerprint=_fingerprint(entries), content_type="application/zip",
                  members=members)
