"""The result zip of one job, streamed: cut-outs, comparison sheets, report and gallery.

Nothing is compressed (PNG and JPEG already are), so the zip's size is known before the first
byte and sent as Content-Length; ZIP64 records appear by themselves past 4 GiB or 65 535
members. Files are read in a worker thread while the event loop sends the bytes.

The task rows are walked a page at a time (`gateway.results.pages`); the report files are not
built here but taken from disk (`gateway.results.job_report`): written once when the job
ended, or for a partial download into a temporary folder during the same walk.
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
from gateway.results.pages import task_pages
from gateway.results.report import REPORT_FILES, ReportItem, ReportWriter
from gateway.results.video import add_videos
from shared.states import TaskState
from shared.storage import (
    FINAL_RESULTS,
    MATTING_OUTPUT,
    PNG_SUFFIX,
    PathOutsideDataDir,
    Storage,
    model_output_rel,
)

__all__ = ["TIMING_KEYS", "JobZip", "TaskMembers", "add_page", "add_report", "build_zip",
           "job_zip", "new_zip", "report_item", "task_members", "zip_chunks"]

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


@dataclass
class TaskMembers:
    """One task's files in the zip, and the names the report gives them."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    matting_output: str | None = None
    compare_output: str | None = None


def _existing(storage: Storage, rel: str) -> Path | None:
    # A rejected item's name may be one no file can have (too long): that is "no file" too.
    try:
        p = storage.resolve(rel)
        return p if p.is_file() else None
    except (PathOutsideDataDir, OSError):
        return None


def new_zip(sized: bool) -> zipstream.ZipStream:
    return zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=sized)


def task_members(storage: Storage, job_id: str, output: str, models: Sequence[str],
                 t: Task, suffix: str = PNG_SUFFIX) -> TaskMembers:
    """The files of one task that exist (blocking: it stats them).

    A missing one (a failed image, or a partial download of a running job) is simply absent,
    and the report says why. With several `models` every model's cut-out goes in: the first
    under docs/DESIGN.md's name ("Public API"), the others as `matting_output/<x>.<model>.png`
    (`shared.storage.model_output_rel`). `suffix`: the job's cut-out format (`.png`, `.webp`,
    `.avif`); `<x>.alpha.png` is in only with output=both (a job with output options keeps
    one for the comparison stage, not asked for).
    """
    out = TaskMembers()
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
            found = _existing(storage, model_output_rel(first_rel, model, i, alpha))
            if found is not None:
                name = model_output_rel(f"{MATTING_OUTPUT}/{stem}{suffix}", model, i, alpha)
                out.files.append((found, name))
    first_name = f"{MATTING_OUTPUT}/{stem}{suffix}"
    if any(name == first_name for _, name in out.files):
        out.matting_output = first_name
    sheet = _existing(storage, storage.compare_rel(job_id, t.path))
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
) -> int:
    """One page of tasks into the zip and/or the report (blocking: call it in a thread);
    the number of zip members added. `added` (the names already in the zip, carried across
    pages) keeps a name from going in twice: ingest makes output names unique
    (`gateway.intake.output_names`), and the zip holds to it even for rows made before."""
    members = 0
    items: list[ReportItem] = []
    for t in tasks:
        found = task_members(storage, job_id, output, models, t, suffix)
        if added is not None:
            found = _unseen(found, added)
        if zs is not None:
            for path, name in found.files:
                zs.add_path(str(path), name)
            members += len(found.files)
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


def _add_files(zs: zipstream.ZipStream, files: Sequence[tuple[Path, str]]) -> int:
    for path, name in files:
        zs.add_path(str(path), name)
    return len(files)


def add_report(zs: zipstream.ZipStream, folder: Path) -> int:
    """report.json, report.csv and index.html from `folder`, at the zip's root."""
    for name in REPORT_FILES:
        zs.add_path(str(folder / name), name)
    return len(REPORT_FILES)


def build_zip(
    storage: Storage,
    job_id: str,
    output: str,
    tasks: Sequence[Task],
    *,
    report: Path | None = None,
    models: Sequence[str] = (),
    sized: bool = True,
    suffix: str = PNG_SUFFIX,
) -> JobZip:
    """The zip of tasks held in memory (blocking; tests and small callers): with the report
    files in `report`, or without it a report written from `tasks` into a temporary folder
    that `zip_chunks` removes once the zip is read."""
    zs = new_zip(sized)
    added: set[str] = set()
    if report is not None:
        members = add_page(storage, job_id, output, models, tasks, zs=zs, added=added,
                           suffix=suffix)
        members += _add_files(zs, add_videos(storage, job_id, True, added)[0])
        return JobZip(zs, len(zs) if sized else None, members + add_report(zs, report))
    tmp = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        with ReportWriter(tmp, job_id, models, TIMING_KEYS) as writer:
            members = add_page(storage, job_id, output, models, tasks, zs=zs, writer=writer,
                               added=added, suffix=suffix)
            files, items = add_videos(storage, job_id, True, added)
            members += _add_files(zs, files)
            writer.add(items)
            writer.finish()
        members += add_report(zs, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return JobZip(zs, len(zs) if sized else None, members, cleanup=tmp)


async def job_zip(
    db: Database,
    storage: Storage,
    job_id: str,
    output: str,
    models: Sequence[str],
    *,
    report: Path | None,
    partial: Path | None = None,
    suffix: str = PNG_SUFFIX,
) -> JobZip:
    """The job's zip, its rows walked a page at a time with each page's file checks in a
    thread. A finished job (`report`: its report folder) gets a sized zip; a running one
    (`partial`: an empty temporary folder) gets its report written into `partial` during
    the same walk, and an unsized zip (its files may still be replaced by a retry)."""
    sized = partial is None
    zs = new_zip(sized)
    writer = None
    if partial is not None:
        writer = await asyncio.to_thread(ReportWriter, partial, job_id, models, TIMING_KEYS)
    try:
        members = 0
        added: set[str] = set()
        async for page in task_pages(db, job_id):
            members += await asyncio.to_thread(add_page, storage, job_id, output, models, page,
                                               zs=zs, writer=writer, added=added,
                                               suffix=suffix)
        files, items = await asyncio.to_thread(add_videos, storage, job_id, sized, added)
        members += _add_files(zs, files)
        if writer is not None:
            await asyncio.to_thread(writer.add, items)
            await asyncio.to_thread(writer.finish)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    folder = partial if partial is not None else report
    assert folder is not None
    members += add_report(zs, folder)
    return JobZip(zs, len(zs) if sized else None, members, cleanup=partial)


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


def zip_chunks(job_zip: JobZip) -> Iterator[bytes]:
    """The zip's bytes (a blocking iterator that reads files: iterate it in a threadpool);
    a partial download's temporary report folder goes once the zip is sent or abandoned."""
    try:
        yield from job_zip.stream
    finally:
        if job_zip.cleanup is not None:
            shutil.rmtree(job_zip.cleanup, ignore_errors=True)
