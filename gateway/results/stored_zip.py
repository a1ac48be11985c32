"""A finished job's zip written once, after its report, and served as a file.

A zip made while it is sent costs CPU for every member of every download: on the 2-core
machine a 100 000-image job's zip came at ×0.69 of the speed of reading its files, with the
budget of that CPU allowing ×0.83 at best (BENCHMARKS.md, "The download's budget"). Written
once into `DATA_DIR/reports/<job>/job.zip` when the job has ended, every later download is
that file: the kernel sends it (`shared.serve.send_file`, through the ASGI path-send
extension of Starlette's `FileResponse`), and HTTP ranges come with it, so a download cut
near its end resumes there (README, "The stored zip").

The file is the very bytes the download would have streamed (the same `finished_zip`), made
by the same code, into a temporary name beside it, renamed only once its length is the
zip's announced length (a temporary one left by a crash is removed by the next write).
Until then, and for a job whose zip is not stored (ZIP_STORE off,
storage on S3, or too little room: ZIP_STORE_KEEP_FREE), downloads are made as they are
sent, as before. Deleting the job removes the report folder and with it the zip, or a
temporary one being written (whose writing then fails and is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from gateway.db.database import Database
from gateway.db.tables import Job
from gateway.results.job_report import MissingPass, Reports, job_models
from gateway.results.zip_processes import process_count
from gateway.results.zip_stream import JobZip, ReportFiles, job_zip, zip_chunks
from gateway.results.zipwriter import ZipSizeMismatch
from shared.settings import Settings
from shared.storage import Storage, write_all
from shared.threads import in_own_thread

__all__ = ["STORED_ZIP", "StoredZips", "finished_zip", "has_room"]

log = logging.getLogger("gateway.results.stored_zip")

STORED_ZIP = "job.zip"
"""The stored zip's name in the job's report folder."""


async def finished_zip(db: Database, storage: Storage, job: Job, report: ReportFiles,
                       settings: Settings) -> JobZip:
    """A finished job's zip with its report files, made as it is read: what a download
    streams, and what is stored."""
    return await job_zip(db, storage, job.id, job.output, job_models(job), report=report,
                         suffix=job.cutout_suffix,
                         processes=process_count(settings.zip_processes),
                         process_min=settings.zip_process_min_members)


def has_room(folder: Path, size: int, keep_free: float) -> bool:
    """Whether `size` more bytes in `folder`'s file system still leave `keep_free` of it
    free (blocking)."""
    disk = shutil.disk_usage(folder)  # as every other free-space check here
    return disk.free - size >= keep_free * disk.total


class StoredZips:
    """The stored zips of one gateway's jobs (local storage only)."""

    def __init__(self, db: Database, storage: Storage, settings: Settings) -> None:
        self.db, self.storage, self.settings = db, storage, settings
        self._missing = MissingPass(db)
        """Jobs seen with their zip stored, and those whose zip could not be."""

    def path(self, job_id: str) -> Path:
        return self.storage.job_reports(job_id) / STORED_ZIP

    def ready(self, job_id: str) -> Path | None:
        """The job's stored zip, if it has one (blocking)."""
        path = self.path(job_id)
        return path if path.is_file() else None

    async def store(self, job: Job, report: ReportFiles) -> bool:
        """Write the finished job's zip (its report already written: `report`); False when
        it is not sized in advance or the disk has too little room for it. Raises what the
        making of the zip raises (a file gone or changed since its task completed), leaving
        no file behind."""
        started = time.monotonic()
        made = await finished_zip(self.db, self.storage, job, report, self.settings)
        path = self.path(job.id)
        size = made.size
        if size is None or not has_room(path.parent, size, self.settings.zip_store_keep_free):
            made.stream.close()
            log.info("job %s: zip not stored (%s)", job.id,
                     "size not known in advance" if size is None else f"no room for {size} B")
            return False
        for left in path.parent.glob(f".{STORED_ZIP}.*.tmp"):  # a crashed writer's
            left.unlink(missing_ok=True)
        tmp = path.with_name(f".{STORED_ZIP}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            written = await in_own_thread(lambda stop: _write(made, fd, stop), "zip-store")
            if written != size:
                raise ZipSizeMismatch(f"stored zip of job {job.id}: {written} of {size} B")
            await asyncio.to_thread(os.fsync, fd)  # on disk before its name says it is whole
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        log.info("job %s: zip of %d B stored in %.1f s", job.id, size,
                 time.monotonic() - started)
        return True

    async def store_missing(self, reports: Reports) -> int:
        """Store the zip of every finished job that lacks one, one job after the other, its
        report first (`reports`); the number stored. (The scheduler's maintenance runs it in
        the background, beside the report pass.) A job whose zip could not be stored (no
        room, a file gone) is tried again RETRY_FAILED_S later."""

        async def store(job: Job) -> bool:
            try:
                return await self.store(job, await reports.files(job))
            except Exception as exc:
                log.warning("storing the zip of job %s failed (%s); trying again later",
                            job.id, exc)
                return False

        return await self._missing.run(self.ready, store)


def _write(made: JobZip, fd: int, stop: threading.Event) -> int:
    """The zip's bytes into the file `fd`: spliced from its worker processes' pipes when
    made by them, else written a gathered piece at a time; the bytes written."""
    if made.splice is not None:
        return made.splice(fd, stop)
    written = 0
    pieces = zip_chunks(made)
    try:
        for piece in pieces:
            if stop.is_set():
                break
            write_all(fd, [piece])
            written += len(piece)
    finally:
        pieces.close()
    return written
