"""A job's output files as zip members, wherever they live: a file in DATA_DIR or an object.

On a local store (the default) a member is the file itself, read in blocks as it is sent
(`gateway.results.zip_stream`). On S3 a member is an
`ObjectFile` (key and size, both known before the first byte, so the zip stays sized); its
bytes are fetched while the zip is sent, `PREFETCH_OBJECTS` ahead in `PREFETCH_THREADS`
threads (`ObjectPrefetch`), because one GET after the other would make every member wait a
full round trip to the store.

Which outputs exist: locally one listing per folder (`os.scandir`, the last FINDER_FOLDERS
kept), on S3 one listing per job area (`matting_output/<job>/`, `final_results/<job>/`) per
download or report, kept in a dict, instead of a `stat` or a HEAD request per file
(`JobFinder`). A finished job's zip sized from its rows' records needs no listing: it opens
each member in its folder, each folder opened once (`OpenFolders`).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.objects import ObjectStore
from shared.storage import PathOutsideDataDir, Storage

__all__ = [
    "FINDER_FOLDERS",
    "PREFETCH_OBJECTS",
    "PREFETCH_THREADS",
    "STREAM_ABOVE_BYTES",
    "JobFinder",
    "Member",
    "ObjectFile",
    "ObjectPrefetch",
    "OpenFolders",
    "member_size",
    "open_plain",
]

PREFETCH_OBJECTS = 32
"""Objects fetched ahead of the one being sent: enough to hide a store's round trip (tens of
ms on a remote S3) behind the sending of the members before it; memory is at most this many
members of up to STREAM_ABOVE_BYTES each."""
PREFETCH_THREADS = 8
"""Threads fetching ahead, per download."""
STREAM_ABOVE_BYTES = 8 * 1024 * 1024
"""An object above this size is not prefetched whole but streamed in ranged reads
(`ObjectStore.open_read`) when its turn comes: a video or a huge PNG is not held in memory."""
_STREAM_BLOCK = 1024 * 1024
FINDER_FOLDERS = 8
"""Local folders whose listing a `JobFinder` keeps: the rows come in path order, so a walk
is in one folder at a time (a few for a job with several cut-out formats)."""


@dataclass(frozen=True)
class ObjectFile:
    """An object of the store, with its size as listed (the zip is sized from it)."""

    key: str
    size: int


Member = Path | str | ObjectFile
"""One file of a job: a local file (a Path, or its absolute path as a string: a download's
walk makes no Path per member), or an object of an S3 store."""


_UNLISTED: Final = ("", frozenset[str]())


class JobFinder:
    """Which of a job's outputs exist, and where (blocking: call it in a thread)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._listed: dict[str, dict[str, int]] = {}
        self._folders: dict[str, tuple[str, frozenset[str]] | None] = {}
        self._lock = threading.Lock()

    def find(self, key: str) -> Path | ObjectFile | None:
        """`key`'s file or object, or None when there is none (or the name is one no file
        can have: a rejected item's too-long name is "no file" too)."""
        found = self.where(key)
        return Path(found) if isinstance(found, str) else found

    def where(self, key: str) -> str | ObjectFile | None:
        """`find`, a local file as its absolute path (a string: no Path per member)."""
        if self.storage.is_local:
            folder, _, name = key.rpartition("/")
            listed = self._folders.get(folder, _UNLISTED)  # a dict read needs no lock
            if listed is _UNLISTED:
                listed = self._folder(folder)
            return f"{listed[0]}/{name}" if listed is not None and name in listed[1] else None
        area = "/".join(key.split("/")[:2]) + "/"
        with self._lock:
            index = self._listed.get(area)
            if index is None:
                index = dict(self.storage.objects.list(area))
                self._listed[area] = index
        size = index.get(key)
        return None if size is None else ObjectFile(key, size)


    def _folder(self, folder: str) -> tuple[str, frozenset[str]] | None:
        """A local folder's resolved path and the names of the plain files in it, listed
        once (`os.scandir`): a job's outputs lie 1 000 to a folder, and one listing per
        folder replaces a `realpath` (a `lstat` per path component) and a `stat` per file,
        most of a 100 000-image zip's preparation. The folder itself is resolved under
        DATA_DIR as any path is; a symlink in it is not a plain file and is never found."""
        with self._lock:
            if folder in self._folders:
                return self._folders[folder]
        try:
            where = self.storage.objects.local_path(folder)
            if where is None:
                return None
            with os.scandir(where) as it:
                names = frozenset(e.name for e in it if e.is_file(follow_symlinks=False))
            listed: tuple[str, frozenset[str]] | None = (str(where), names)
        except (PathOutsideDataDir, OSError):
            listed = None
        with self._lock:
            if len(self._folders) >= FINDER_FOLDERS:
                self._folders.pop(next(iter(self._folders)))
            self._folders[folder] = listed
        return listed


_UNOPENED: Final = -2
_OUTSIDE: Final = -1
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
"""A member is opened without following a symlink, and without waiting on a FIFO (no
writer: the open would block); a regular file reads the same with O_NONBLOCK."""
_FOLDER_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ABSENT: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO,
                            errno.EISDIR})
"""What an open of a member's name may fail with when there is no plain file by that name: a
symlink (ELOOP, from O_NOFOLLOW) is no file of the job's, as `JobFinder` does not list it."""


def open_plain(path: str | os.PathLike[str], dir_fd: int | None = None
               ) -> tuple[int, os.stat_result] | None:
    """`path` (in the folder `dir_fd` when given) opened without following a symlink or
    waiting on a FIFO, and the opened file's own `fstat` (so it cannot be swapped between
    the check and the read); None, nothing left open, when it is no plain file: absent, a
    symlink, a folder, a FIFO, a name no file can have."""
    try:
        fd = os.open(path, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    except ValueError:  # a NUL in the name: no file has it
        return None
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


class OpenFolders:
    """A local zip's folders, each opened once (a directory descriptor), and its members
    opened relative to them (blocking: use it in the zip's thread; `close` when done).

    Opening `name` in an open folder looks up one path component, where an absolute path
    walks every one from the root again (a `realpath`'s worth per member), and the folder a
    member is read from is the one resolved under DATA_DIR, whatever is renamed above it
    meanwhile. It needs no listing either: a member's own `fstat` says whether it is a plain
    file (issue 17, the download's fifth pass). The last FINDER_FOLDERS folders stay open."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._fds: dict[str, int] = {}

    def open(self, key: str) -> tuple[int, os.stat_result] | None:
        """`key`'s plain file opened (the caller closes the descriptor) and its `fstat`;
        None when there is none: no such name, a symlink, a folder, a FIFO, or a folder
        outside DATA_DIR."""
        folder, _, name = key.rpartition("/")
        dir_fd = self._fds.get(folder, _UNOPENED)
        if dir_fd == _UNOPENED:
            dir_fd = self._folder(folder)
        if dir_fd == _OUTSIDE:
            return None
        return open_plain(name, dir_fd)

    def _folder(self, folder: str) -> int:
        """`folder` resolved under DATA_DIR and opened; _OUTSIDE when it cannot be."""
        try:
            where = self.storage.objects.local_path(folder)
            fd = _OUTSIDE if where is None else os.open(where, _FOLDER_FLAGS)
        except (PathOutsideDataDir, OSError):  # as `JobFinder._folder`: none of it is found
            fd = _OUTSIDE
        if len(self._fds) >= FINDER_FOLDERS:
            old = self._fds.pop(next(iter(self._fds)))
            if old != _OUTSIDE:
                os.close(old)
        self._fds[folder] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            if fd != _OUTSIDE:
                os.close(fd)
        self._fds.clear()


class ObjectPrefetch:
    """Fetches the zip's objects ahead of the sending, in the zip's own order.

    `register` is called as members are added (the order the zip will read them in); each
    member's data iterator then `take`s its bytes, which starts the fetches of the next
    PREFETCH_OBJECTS. `close` drops whatever is still in flight (a client that went away).
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._order: deque[ObjectFile] = deque()
        self._pending: dict[int, Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def register(self, obj: ObjectFile) -> None:
        if obj.size <= STREAM_ABOVE_BYTES:
            self._order.append(obj)

    def _fill(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PREFETCH_THREADS, thread_name_prefix="zip-fetch")
        for obj in list(self._order)[:PREFETCH_OBJECTS]:
            if id(obj) not in self._pending:
                self._pending[id(obj)] = self._pool.submit(self.store.get, obj.key)

    def take(self, obj: ObjectFile) -> bytes:
        with self._lock:
            if self._order and self._order[0] is obj:
                self._fill()
                self._order.popleft()
                future = self._pending.pop(id(obj))
            else:  # not registered (or out of order): fetch it now
                future = None
        if future is None:
            return self.store.get(obj.key)
        return future.result()

    def chunks(self, obj: ObjectFile) -> Iterator[bytes]:
        """The member's bytes for the zip, as it reads them."""
        if obj.size > STREAM_ABOVE_BYTES:
            with self.store.open_read(obj.key) as f:
                while block := f.read(_STREAM_BLOCK):
                    yield block
            return
        yield self.take(obj)

    def close(self) -> None:
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._order.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)


def member_size(member: Member) -> int:
    """The size `member` has now (blocking: a `stat` for a local file; an object's as
    listed). A zip is sized from these before its first byte."""
    if isinstance(member, ObjectFile):
        return member.size
    return os.stat(member).st_size
