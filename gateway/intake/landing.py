"""Where intake's files land: DATA_DIR's files as they always have, or objects.

With the local DATA_DIR (the default) the store's objects are DATA_DIR's files, so every
function here is a no-op or a plain file operation and intake behaves as it always did.

With STORAGE_URL=s3://… (README, "Uploads on object storage") every input a job has — archive
members, a single image, video frames, ground-truth mattes, the video manifest — becomes an
object under `input/<job>/…`, the name its task row carries, so a worker on another machine
reads it by that name. The gateway's local DATA_DIR is then only scratch: a `POST /upload`
body is spooled there (and stored as the object `input/<job>/upload.<ext>` before the 202,
so any gateway can ingest it after a crash), and ingest extracts a batch of members there,
hashes them for the result cache, uploads them `OBJECT_PUT_CONCURRENCY` at a time and deletes
the local copies before the next batch: the local disk holds one upload and one batch,
whatever the archive unpacks to. An upload that is only an object (a tus upload, or a
`POST /upload` ingested by another gateway) is read in place through `ObjectStore.open_read`
— a tar strictly forward, a zip through seekable ranged reads — with nothing downloaded; only
a single image or video is fetched to scratch, since Pillow's probe and FFmpeg want a file.
"""

from __future__ import annotations

import contextlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gateway.intake.archive import FileSource, UploadSource
from shared.limits import OBJECT_COPY_BYTES, OBJECT_PUT_CONCURRENCY
from shared.objects import ObjectStore
from shared.storage import INPUT, Storage

__all__ = [
    "ObjectSource",
    "drop_inputs",
    "is_remote",
    "keep_upload",
    "publish",
    "scratch",
    "upload_source",
]


def is_remote(storage: Storage) -> bool:
    """True when jobs' files are objects elsewhere (S3), not DATA_DIR's own files."""
    return not storage.is_local


@dataclass(frozen=True)
class ObjectSource:
    """An upload read from its object: `open` streams it with ranged GETs (seekable)."""

    store: ObjectStore
    key: str
    length: int

    @property
    def size(self) -> int:
        return self.length

    @property
    def local(self) -> Path | None:
        return None

    def open(self) -> IO[bytes]:
        return self.store.open_read(self.key)

    def copy_to(self, target: Path) -> None:
        with self.store.open_read(self.key) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, OBJECT_COPY_BYTES)


def upload_source(storage: Storage, rel: str) -> UploadSource | None:
    """The upload `rel` (DATA_DIR-relative): its local file when this gateway has one (its
    own spool, or the local DATA_DIR), else its object; None when neither exists. Blocking."""
    local = storage.resolve(rel)
    if local.is_file():
        return FileSource(local)
    if not is_remote(storage):
        return None
    size = storage.objects.size(rel)
    return None if size is None else ObjectSource(storage.objects, rel, size)


def scratch(storage: Storage) -> Storage:
    """DATA_DIR's own files under the same names: where ingest's extracted batch is until
    `publish` (on S3), and everything (with the local DATA_DIR, where this is `storage`)."""
    return storage if storage.is_local else Storage(storage.root)


def keep_upload(storage: Storage, path: Path) -> None:
    """After a `POST /upload` body reached the spool: on S3 it is stored as its object too,
    so another gateway can ingest it (the spool stays as this gateway's fast path). Blocking."""
    if is_remote(storage):
        storage.objects.put_file(storage.relative(path), path)


def publish(storage: Storage, files: list[Path]) -> None:
    """On S3: upload each extracted file (a path under DATA_DIR) as the object of the same
    name, `OBJECT_PUT_CONCURRENCY` at a time, and delete the local copy; nothing locally.
    Blocking (ingest's worker thread); the first failure is raised after the rest finish."""
    if not files or not is_remote(storage):
        return
    root = storage.root

    def put(path: Path) -> None:
        storage.objects.put_file(path.relative_to(root).as_posix(), path)
        path.unlink(missing_ok=True)

    with ThreadPoolExecutor(min(OBJECT_PUT_CONCURRENCY, len(files))) as pool:
        for future in [pool.submit(put, f) for f in files]:
            future.result()


def drop_inputs(storage: Storage, job_id: str, *, sub: str = "") -> None:
    """Remove `input/<job>/<sub>` (the whole input folder without `sub`): the local files
    (scratch, on S3) and, on S3, the objects under that name. Blocking."""
    rel = f"{INPUT}/{job_id}" + (f"/{sub}" if sub else "")
    local = storage.resolve(rel)
    if local.is_dir():
        shutil.rmtree(local, ignore_errors=True)
    else:
        local.unlink(missing_ok=True)
    if is_remote(storage):
        storage.objects.delete_prefix(rel + "/")
        if sub:
            with contextlib.suppress(FileNotFoundError):
                storage.objects.delete(rel)

