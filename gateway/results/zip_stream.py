"""The result zip of one job, streamed: cut-outs, comparison sheets, report and gallery.

Nothing is compressed (PNG and JPEG already are), so the zip's size is known before the first
byte and sent as Content-Length; ZIP64 records appear by themselves past 4 GiB or 65 535
members. Files are read in a worker thread while the event loop sends the bytes.

The task rows are walked a page at a time (`gateway.results.pages`); the report files are not
built here but taken from disk (`gateway.results.job_report`): written once when the job
ended, or for a partial download into a temporary folder during the same walk.

On S3 (`STORAGE_URL=s3://…`) the members are objects: found by one listing per job area,
sized from it, and fetched ahead while the zip is sent (`gateway.results.members`); the
zip is still streamed by the gateway, never built whole anywhere (README, "Object storage").
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zipstream

from gateway.db.database import Database
from gateway.db.tables import Task
from gateway.pipeline.result_cache import CACHE_WORKER
from gateway.results.members import JobFinder, Member, ObjectPrefetch, add_member
from gateway.results.pages import task_pages
from gateway.results.report import REPORT_FILES, ReportItem, ReportWriter
from gateway.results.video import add_videos
from shared.limits import ZIP_CHUNK_BYTES
from shared.states import TaskState
from shared.storage import (
    FINAL_RESULTS,
    MATTING_OUTPUT,
    PNG_SUFFIX,
    Storage,
    model_output_rel,
)

__all__ = ["TIMING_KEYS", "JobZip", "ReportFiles", "TaskMembers", "add_page", "add_report",
           "build_zip", "job_zip", "new_zip", "report_item", "task_members", "zip_chunks"]

TIMING_KEYS = ("queued_s", "matting_s", "matting_wait_s", "comparison_s", "comparison_wait_s",
               "total_s")
"""The report's timing columns, as `_timings` derives them from a task row."""


@dataclass
class JobZip:
    stream: zipstream.ZipStream
    size: int | None
    """The exact byte count when known in advance (sized stream), else None."""
    members: int
    cleanup: Path | None = None
    """A temporary report folder to remove once the zip has been sent (partial download)."""
    prefetch: ObjectPrefetch | None = None
    """The fetching-ahead of an S3 zip's objects, stopped once the zip is sent or dropped."""


ReportFiles = Path | Sequence[tuple[Member, str]]
"""The report files of a zip: a folder holding them, or (on S3) the objects by zip name."""


@dataclass
class TaskMembers:
    """One task's files in the zip, and the names the report gives them."""

    files: list[tuple[Member, str]] = field(default_factory=list)
    matting_output: str | None = None
    compare_output: str | None = None


def new_zip(sized: bool) -> zipstream.ZipStream:
    return zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=sized)


def task_members(storage: Storage, job_id: str, output: str, models: Sequence[str],
                 t: Task, suffix: str = PNG_SUFFIX, finder: JobFinder | None = None,
                 ) -> TaskMembers:
    """The files of one task that exist (blocking: it stats them).

    A missing one (a failed image, or a partial download of a running job) is simply absent,
    and the report says why. With several `models` every model's cut-out goes in: the first
    under docs/DESIGN.md's name ("Public API"), the others as `matting_output/<x>.<model>.png`
    (`shared.storage.model_output_rel`). `suffix`: the job's cut-out format (`.png`, `.webp`,
    `.avif`); `<x>.alpha.png` is in only with output=both (a job with output options keeps
    one for the comparison stage, not asked for).
    """
    out = TaskMembers()
    find = (finder or JobFinder(storage)).find
    if t.state == TaskState.REJECTED.value:
        # A rejected input has no outputs; files under its name belong to another input
        # (gateway.intake.output_names).
        return out
    names = list(models) or [""]  # one unnamed model: docs/DESIGN.md's names ("Public API")
    stem = Storage.stem_path(t.path)
    first_rel = storage.matting_rel(job_id, t.path, suffix)
    for i, model in enumerate(names):
        kinds = (False, True) if output == "both" else (False,)
        for alpha in kinds:
            found = find(model_output_rel(first_rel, model, i, alpha))
            if found is not None:
                name = model_output_rel(f"{MATTING_OUTPUT}/{stem}{suffix}", model, i, alpha)
                out.files.append((found, name))
    first_name = f"{MATTING_OUTPUT}/{stem}{suffix}"
    if any(name == first_name for _, name in out.files):
        out.matting_output = first_name
    sheet = find(storage.compare_rel(job_id, t.path))
    if sheet is not None:
        out.compare_output = f"{FINAL_RESULTS}/{stem}_compare.jpg"
        out.files.append((sheet, out.compare_output))
    return out


def report_item(t: Task, members: TaskMembers) -> ReportItem:
    return ReportItem(
        path=t.path,
        state=t.state,
        error=t.error if t.state != TaskState.COMPLETED.value else None,
        metrics=t.metrics,
        timings=_timings(t),
        matting_output=members.matting_output,
        compare_output=members.compare_output,
        cached=t.matting_worker == CACHE_WORKER,
        confidence=t.confidence,
        fallback=t.fallback,
    )


def add_page(
    storage: Storage,
    job_id: str,
    output: str,
    models: Sequence[str],
    tasks: Iterable[Task],
    *,
    zs: zipstream.ZipStream | None = None,
    writer: ReportWriter | None = None,
    added: set[str] | None = None,
    suffix: str = PNG_SUFFIX,
    finder: JobFinder | None = None,
    prefetch: ObjectPrefetch | None = None,
) -> int:
    """One page of tasks into the zip and/or the report (blocking: call it in a thread);
    the number of zip members added. `added` (the names already in the zip, carried across
    pages) keeps a name from going in twice: ingest makes output names unique
    (`gateway.intake.output_names`), and the zip holds to it even for rows made before.
    `finder` (one per zip or report) and `prefetch` (one per zip) matter on S3 only."""
    members = 0
    items: list[ReportItem] = []
    finder = finder or JobFinder(storage)
    for t in tasks:
        found = task_members(storage, job_id, output, models, t, suffix, finder)
        if added is not None:
            found = _unseen(found, added)
        if zs is not None:
            members += _add_files(zs, found.files, prefetch)
        if writer is not None:
            items.append(report_item(t, found))
    if writer is not None:
        writer.add(items)
    return members


def _unseen(found: TaskMembers, added: set[str]) -> TaskMembers:
    """`found` less the names already in the zip (then recorded as added)."""
    files = [(path, name) for path, name in found.files if name not in added]
    kept = {name for _, name in files}
    added.update(kept)
    return TaskMembers(
        files=files,
        matting_output=found.matting_output if found.matting_output in kept else None,
        compare_output=found.compare_output if found.compare_output in kept else None,
    )


def _add_files(zs: zipstream.ZipStream, files: Sequence[tuple[Member, str]],
               prefetch: ObjectPrefetch | None = None) -> int:
    for member, name in files:
        add_member(zs, member, name, prefetch)
    return len(files)


def add_report(zs: zipstream.ZipStream, report: ReportFiles,
               prefetch: ObjectPrefetch | None = None) -> int:
    """report.json, report.csv and index.html at the zip's root: from a folder, or (S3)
    the objects `gateway.results.job_report.Reports.files` names."""
    if isinstance(report, Path):
        return _add_files(zs, [(report / name, name) for name in REPORT_FILES])
    return _add_files(zs, report, prefetch)


def build_zip(
    storage: Storage,
    job_id: str,
    output: str,
    tasks: Sequence[Task],
    *,
    report: ReportFiles | None = None,
    models: Sequence[str] = (),
    sized: bool = True,
    suffix: str = PNG_SUFFIX,
) -> JobZip:
    """The zip of tasks held in memory (blocking; tests and small callers): with the report
    files in `report`, or without it a report written from `tasks` into a temporary folder
    that `zip_chunks` removes once the zip is read."""
    zs = new_zip(sized)
    added: set[str] = set()
    finder = JobFinder(storage)
    prefetch = ObjectPrefetch(storage.objects)
    if report is not None:
        members = add_page(storage, job_id, output, models, tasks, zs=zs, added=added,
                           suffix=suffix, finder=finder, prefetch=prefetch)
        members += _add_files(zs, add_videos(storage, job_id, True, added)[0], prefetch)
        members += add_report(zs, report, prefetch)
        return JobZip(zs, len(zs) if sized else None, members, prefetch=prefetch)
    tmp = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        with ReportWriter(tmp, job_id, models, TIMING_KEYS) as writer:
            members = add_page(storage, job_id, output, models, tasks, zs=zs, writer=writer,
                               added=added, suffix=suffix, finder=finder, prefetch=prefetch)
            files, items = add_videos(storage, job_id, True, added)
            members += _add_files(zs, files, prefetch)
            writer.add(items)
            writer.finish()
        members += add_report(zs, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return JobZip(zs, len(zs) if sized else None, members, cleanup=tmp, prefetch=prefetch)


async def job_zip(
    db: Database,
    storage: Storage,
    job_id: str,
    output: str,
    models: Sequence[str],
    *,
    report: ReportFiles | None,
    partial: Path | None = None,
    suffix: str = PNG_SUFFIX,
) -> JobZip:
    """The job's zip, its rows walked a page at a time with each page's file checks in a
    thread. A finished job (`report`: its report folder) gets a sized zip; a running one
    (`partial`: an empty temporary folder) gets its report written into `partial` during
    the same walk, and an unsized zip (its files may still be replaced by a retry)."""
    sized = partial is None
    zs = new_zip(sized)
    finder = JobFinder(storage)
    prefetch = ObjectPrefetch(storage.objects)
    writer = None
    if partial is not None:
        writer = await asyncio.to_thread(ReportWriter, partial, job_id, models, TIMING_KEYS)
    try:
        members = 0
        added: set[str] = set()
        async for page in task_pages(db, job_id):
            members += await asyncio.to_thread(add_page, storage, job_id, output, models, page,
                                               zs=zs, writer=writer, added=added,
                                               suffix=suffix, finder=finder,
                                               prefetch=prefetch)
        files, items = await asyncio.to_thread(add_videos, storage, job_id, sized, added)
        members += _add_files(zs, files, prefetch)
        if writer is not None:
            await asyncio.to_thread(writer.add, items)
            await asyncio.to_thread(writer.finish)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    folder = partial if partial is not None else report
    assert folder is not None
    members += add_report(zs, folder, prefetch)
    return JobZip(zs, len(zs) if sized else None, members, cleanup=partial, prefetch=prefetch)


def _timings(t: Task) -> dict[str, float | None]:
    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 4) if a is not None and b is not None else None

    return {
        "queued_s": span(t.queued_at, t.matting_dispatched_at),
        "matting_s": span(t.matting_started_at, t.matting_finished_at),
        "matting_wait_s": span(t.matting_dispatched_at, t.matting_started_at),
        "comparison_s": span(t.comparison_started_at, t.comparison_finished_at),
        "comparison_wait_s": span(t.comparison_dispatched_at, t.comparison_started_at),
        "total_s": span(t.queued_at, t.completed_at),
    }


def zip_chunks(job_zip: JobZip, size: int = ZIP_CHUNK_BYTES) -> Iterator[bytes]:
    """The zip's bytes in pieces of about `size` (a blocking iterator that reads files:
    iterate it in a threadpool); a partial download's temporary report folder goes once the
    zip is sent or abandoned.

    The zip library yields a header, the data and a descriptor per member: for a job of
    small images that is hundreds of thousands of pieces of a few bytes to a few KB, and each
    one sent alone costs a thread hop and a turn of the event loop (a 3 000-image job's zip
    downloaded at 1/30 of the speed of reading its files). Gathered here, a download costs a
    hop per ZIP_CHUNK_BYTES."""
    try:
        pending: list[bytes] = []
        held = 0
        for piece in job_zip.stream:
            pending.append(piece)
            held += len(piece)
            if held >= size:
                yield b"".join(pending)
                pending.clear()
                held = 0
        if pending:
            yield b"".join(pending)
    finally:
        if job_zip.prefetch is not None:
            job_zip.prefetch.close()
        if job_zip.cleanup is not None:
            shutil.rmtree(job_zip.cleanup, ignore_errors=True)
