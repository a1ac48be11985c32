"""Background ingest: an uploaded file becomes extracted images and one task row per image.

Extraction runs in a worker thread, a few hundred members at a time, so the event loop keeps
serving `/status` while a 100 GB tar unpacks; each batch of task rows is one short
transaction, and the job's `total` grows as it goes so progress is visible during ingest.
Ground truth can sit anywhere in the archive, so mattes are paired only once the whole archive
has been read, by paging through the job's task rows (never holding them all).

Every write goes through `Database.write()`, the gateway's one write lock, a batch at a time,
so the scheduler's transactions interleave with a long ingest instead of waiting for it.

A crash mid-ingest leaves the job in `ingesting`; calling this again wipes that job's tasks
and extracted files and starts over, so a restart never leaves duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import now
from gateway.db.transitions import job_options
from gateway.intake.archive import (
    ArchiveCorrupt,
    ArchiveLimits,
    ArchiveRejected,
    GtIndex,
    Member,
    UploadSource,
    iter_members,
)
from gateway.intake.landing import drop_inputs, is_remote, publish, scratch, upload_source
from gateway.intake.output_names import OutputNames
from gateway.intake.video import MANIFEST, VideoInfo
from gateway.pipeline.result_cache import add_cache_keys, job_salt
from shared.errors import MattepipeError
from shared.settings import Settings
from shared.states import JobState, TaskState
from shared.storage import PathOutsideDataDir, Storage

__all__ = ["INSERT_BATCH", "ingest_job", "unexpected_error"]

log = logging.getLogger(__name__)

INSERT_BATCH = 500
"""Members per worker-thread round and per insert transaction."""
GT_PAGE = 5000
"""Task rows read per page when pairing ground truth (never all of a job's rows at once)."""


@dataclass
class _Take:
    members: list[Member]
    error: ArchiveRejected | None = None
    done: bool = False


def _unique_outputs(member: Member, names: OutputNames, refused: dict[str, str]) -> Member:
    """A member whose output names another input already has becomes a rejected one (its
    extracted file is removed); see `gateway.intake.output_names`. A video claims its own
    names (`<stem>.webm`, `<stem>_compare.jpg`); when refused, its frames are refused too
    (`refused`: video path → reason)."""
    if member.frame_of is not None and member.frame_of in refused:
        if member.stored is not None:
            member.stored.unlink(missing_ok=True)
        return Member(member.path, None, refused[member.frame_of], False)
    if member.is_gt or (member.stored is None and member.video is None):
        return member
    first = names.claim(member.path)
    if first is None:
        return member
    reason = OutputNames.reason(first)
    if member.video is not None:
        refused[member.path] = reason
    if member.stored is not None:
        member.stored.unlink(missing_ok=True)
    return Member(member.path, None, reason, False)


def _take(it: Iterator[Member], n: int, names: OutputNames, refused: dict[str, str]) -> _Take:
    """Advance the extractor by up to n members (runs in a worker thread)."""
    out: _Take = _Take([])
    try:
        for member in it:
            out.members.append(_unique_outputs(member, names, refused))
            if len(out.members) >= n:
                return out
    except ArchiveRejected as exc:
        out.error = exc
    out.done = True
    return out


@dataclass
class _Progress:
    tasks: int = 0
    images: int = 0
    gt: dict[str, str] = field(default_factory=dict)
    """Archive path of each good matte → its DATA_DIR-relative path."""
    videos: int = 0


class _Stop(MattepipeError):
    """The job was cancelled or deleted while we worked."""


@dataclass(frozen=True)
class _Start:
    upload_path: str
    filename: str
    models: list[str]
    output: str
    keeps_matte: bool = False
    """Output options shape the cut-out: `<x>.alpha.png` is written too (`OutputNames`)."""
    cache_salt: bytes | None = None
    """The content-hash cache's salt for this job (`gateway.pipeline.result_cache`); None
    with RESULT_CACHE=0: the rows get no key."""


async def _begin(job_id: str, db: Database, settings: Settings) -> _Start | None:
    async with db.write() as s:
        job = await repo.get_job(s, job_id)
        if job is None or job.state not in (JobState.UPLOADING, JobState.INGESTING):
            return None
        # A job found in `ingesting` was interrupted: its rows are from the dead attempt.
        await repo.delete_job(s, job_id, keep_job=True)
        job.state, job.total, job.error = JobState.INGESTING.value, 0, None
        # Counted before any byte is read: an archive that kills the process still counts.
        job.ingest_attempts = (job.ingest_attempts or 0) + 1
        models = [m for m in (job.model or "").split(",") if m]
        options = job_options(job.format, job.max_size, job.background, job.crop)
        salt = (job_salt(models or [settings.default_model], job.output, options,
                         job.api_key_hash, settings.models_dir)
                if settings.result_cache else None)
        return _Start(job.upload_path, job.filename, models, job.output, options.keeps_matte,
                      salt)


async def _insert(db: Database, job_id: str, rows: list[dict[str, Any]]) -> int:
    """Insert one batch and bump job.total, unless the job was cancelled meanwhile."""
    async with db.write() as s:
        job = await repo.get_job(s, job_id)
        if job is None or job.state != JobState.INGESTING:
            raise _Stop
        await repo.insert_tasks(s, rows)
        job.total += len(rows)
        return int(job.total)


def _rel(stored: Path, storage: Storage) -> str:
    # Pure path arithmetic (the extractor's dest is already resolved): no disk call on the loop.
    return stored.relative_to(storage.root).as_posix()


def _row(job_id: str, member: Member, storage: Storage) -> dict[str, Any]:
    if member.stored is None:
        state, rel = TaskState.REJECTED.value, ""
    else:
        state, rel = TaskState.PENDING.value, _rel(member.stored, storage)
    return {"job_id": job_id, "path": member.path, "input": rel, "state": state,
            "error": member.error}  # fmt: skip


async def _extract(
    job_id: str, upload: UploadSource, start: _Start, db: Database, storage: Storage,
    limits: ArchiveLimits,
) -> tuple[_Progress, ArchiveRejected | None]:  # fmt: skip
    progress = _Progress()
    names = OutputNames(start.models, start.output, start.keeps_matte)
    refused: dict[str, str] = {}
    it = iter_members(upload, storage.job_chunks(job_id), limits, start.filename)
    try:
        while True:
            take = await asyncio.to_thread(_take, it, INSERT_BATCH, names, refused)
            rows = []
            videos: list[VideoInfo] = []
            stored = [m.stored for m in take.members if m.stored is not None]
            for m in take.members:
                if m.video is not None and m.error is None:
                    videos.append(m.video)  # its frames are the tasks
                    continue
                if m.is_gt:
                    if m.stored is not None:
                        progress.gt[m.path] = _rel(m.stored, storage)
                    continue
                progress.images += m.stored is not None
                rows.append(_row(job_id, m, storage))
            if videos:
                await asyncio.to_thread(_note_videos, storage, job_id, videos)
                progress.videos += len(videos)
            if start.cache_salt is not None:  # hashed at ingest: the cache's key per image
                # from the extracted files, still in local scratch on S3 (no GET back)
                await asyncio.to_thread(add_cache_keys, rows, scratch(storage),
                                        start.cache_salt)
            # On S3 the batch leaves for the store now, before its rows exist: a worker never
            # sees a task whose input is not there (no-op with the local DATA_DIR).
            await asyncio.to_thread(publish, storage, stored)
            progress.tasks = await _insert(db, job_id, rows)
            if take.done:
                return progress, take.error
    finally:
        if isinstance(it, Generator):
            with contextlib.suppress(ValueError):  # still running in a thread after cancellation
                it.close()


def _note_videos(storage: Storage, job_id: str, videos: list[VideoInfo]) -> None:
    """Append to the job's video manifest (`gateway.intake.video.MANIFEST`), which the job's
    end reads to assemble each video (`gateway.results.video`)."""
    with (storage.job_input(job_id) / MANIFEST).open("a", encoding="utf-8") as f:
        f.writelines(v.to_line() for v in videos)


async def _pages(db: Database, job_id: str) -> AsyncIterator[list[tuple[int, str]]]:
    last = 0
    while True:
        async with db.read() as s:
            rows = await repo.pending_tasks_page(s, job_id, last, GT_PAGE)
        if not rows:
            return
        last = rows[-1][0]
        yield rows


async def _pair_gt(db: Database, job_id: str, gt: dict[str, str]) -> int:
    index = GtIndex(gt)
    async for page in _pages(db, job_id):
        for _, path in page:
            index.claim(path)
    paired = 0
    async for page in _pages(db, job_id):
        updates = [
            {"id": tid, "gt": gt[g]} for tid, path in page if (g := index.resolve(path)) is not None
        ]
        if updates:
            async with db.write() as s:
                await repo.update_tasks(s, updates)
            paired += len(updates)
    return paired


def unexpected_error(exc: BaseException) -> str:
    """What a job shows of an ingest that failed unexpectedly: the exception's kind, never its
    text (which may name absolute paths); the gateway's log has the rest."""
    return f"ingest failed ({type(exc).__name__}); see the gateway's log"


async def _fail(db: Database, job_id: str, reason: str) -> None:
    async with db.write() as s:
        job = await repo.get_job(s, job_id)
        if job is None or job.state != JobState.INGESTING:
            return
        await repo.delete_job(s, job_id, keep_job=True)
        job.state, job.error, job.total, job.finished_at = JobState.FAILED.value, reason, 0, now()


async def _finish(
    db: Database, job_id: str, progress: _Progress, note: str | None
) -> bool:
    async with db.write() as s:
        job = await repo.get_job(s, job_id)
        if job is None or job.state != JobState.INGESTING:
            return False
        job.total = progress.tasks
        job.error = note
        if progress.images:
            job.state = JobState.RUNNING.value
        else:
            job.state, job.finished_at = JobState.COMPLETED_WITH_ERRORS.value, now()
        return True


def _wipe_attempt(storage: Storage, job_id: str) -> None:
    """What a dead attempt extracted (files and, on S3, objects); the upload stays."""
    drop_inputs(storage, job_id, sub="chunks")
    drop_inputs(storage, job_id, sub=MANIFEST)


def _drop_upload(storage: Storage, job_id: str, upload_rel: str) -> None:
    """The upload, once ingested (its file, its object); on S3 the job's local scratch
    folder too, whose extracted files have all left for the store."""
    with contextlib.suppress(PathOutsideDataDir):
        storage.resolve(upload_rel).unlink(missing_ok=True)
    if is_remote(storage):
        with contextlib.suppress(FileNotFoundError, PathOutsideDataDir):
            storage.objects.delete(upload_rel)
        shutil.rmtree(storage.job_input(job_id), ignore_errors=True)


def _drop_attempt(storage: Storage, job_id: str, upload_rel: str) -> None:
    """A failed ingest: what it extracted and the upload."""
    _wipe_attempt(storage, job_id)
    _drop_upload(storage, job_id, upload_rel)


async def ingest_job(
    job_id: str, db: Database, storage: Storage, settings: Settings
) -> None:
    """Unpack the job's upload into tasks; leaves the job `running`, `failed` or finished."""
    start = await _begin(job_id, db, settings)
    if start is None:
        log.info("ingest: job %s is not waiting for ingest; nothing to do", job_id)
        return
    upload_rel = start.upload_path
    manifest = storage.job_input(job_id) / MANIFEST
    await asyncio.to_thread(_wipe_attempt, storage, job_id)
    try:
        upload = await asyncio.to_thread(upload_source, storage, upload_rel)
    except PathOutsideDataDir:
        await _fail(db, job_id, "uploaded file path is invalid")
        return
    if upload is None:
        await _fail(db, job_id, "uploaded file is missing")
        return
    limits = ArchiveLimits.from_settings(settings)
    try:
        progress, error = await _extract(job_id, upload, start, db, storage, limits)
        if error is not None and (not isinstance(error, ArchiveCorrupt) or not progress.images):
            raise error
        if progress.tasks == 0:
            raise ArchiveRejected("archive holds no images")
        if progress.videos:
            await asyncio.to_thread(publish, storage, [manifest])
        paired = await _pair_gt(db, job_id, progress.gt) if progress.gt else 0
        note = None
        if error is not None:
            note = f"{error.reason}; the {progress.tasks} files read before it are processed"
        if not await _finish(db, job_id, progress, note):
            raise _Stop
    except _Stop:
        log.info("ingest: job %s was cancelled; stopping", job_id)
        await asyncio.to_thread(drop_inputs, storage, job_id)
        return
    except ArchiveRejected as exc:
        log.info("ingest: job %s rejected: %s", job_id, exc.reason)
        await _fail(db, job_id, exc.reason)
        await asyncio.to_thread(_drop_attempt, storage, job_id, upload_rel)
        return
    except Exception as exc:
        log.exception("ingest: job %s failed", job_id)
        # The text of an unexpected error (paths inside DATA_DIR, library internals) stays
        # in the log; the job shows its kind only.
        await _fail(db, job_id, unexpected_error(exc))
        await asyncio.to_thread(_drop_attempt, storage, job_id, upload_rel)
        return
    await asyncio.to_thread(_drop_upload, storage, job_id, upload_rel)
    log.info(
        "ingest: job %s: %d tasks, %d images (%d videos' frames among them), %d with ground "
        "truth", job_id, progress.tasks, progress.images, progress.videos, paired,
    )  # fmt: skip
