"""The result zip of one job, streamed: cut-outs, comparison sheets, report and gallery.

The zip is written by our own streaming writer (`gateway.results.zipwriter`): nothing is
compressed (PNG and JPEG already are) and nothing is kept per member, so memory does not grow
with the job (issue 17). A finished job's rows are walked twice, a page at a time
(`gateway.results.pages`): once before the first byte to find and size the members (one
listing per folder, one `stat` per file: the zip's exact length, sent as Content-Length),
then again while the bytes are sent, each page's files read in the streaming thread. The
report files are not built here but taken from disk (`gateway.results.job_report`): written
once when the job ended, or for a partial download into a temporary folder during the first
walk (a partial zip is not sized: a retry may still replace its files).

On S3 (`STORAGE_URL=s3://…`) the members are objects: found by one listing per job area,
sized from it, and fetched ahead while the zip is sent (`gateway.results.members`); the
zip is still streamed by the gateway, never built whole anywhere (README, "Object storage").

A big finished job's zip (ZIP_PROCESSES, ZIP_PROCESS_MIN_MEMBERS) is made by worker
processes taking its parts in turns (`gateway.results.zip_processes`), out of the gateway's
GIL; the gateway reads the rows, hands out the parts and passes the bytes on (spliced into
the socket where the server lends it).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Task
from gateway.pipeline.result_cache import CACHE_WORKER
from gateway.results.members import (
    JobFinder,
    Member,
    ObjectFile,
    ObjectPrefetch,
    OpenFolders,
    member_size,
)
from gateway.results.pages import (
    PAGE_ROWS,
    output_pages,
    output_pages_here,
    task_pages,
    unsized_pages,
)
from gateway.results.report import REPORT_FILES, ReportItem, ReportWriter
from gateway.results.video import add_videos
from gateway.results.zip_names import OutOfOrder, WindowNames, ZipNames, tag_spread
from gateway.results.zip_processes import Job, ProcessZip, SizedRow
from gateway.results.zip_tasks import (
    READ_BLOCK_BYTES,
    TaskRow,
    blocks,
    candidates_of,
    open_named,
    send_named,
    task_candidates,
    task_pieces,
)
from gateway.results.zipwriter import ZIP64_LIMIT, ZipSizeMismatch, ZipSizer, ZipWriter
from shared.limits import ZIP_CHUNK_BYTES
from shared.objects import LocalStore
from shared.states import TaskState
from shared.storage import PNG_SUFFIX, Storage

__all__ = ["TIMING_KEYS", "JobZip", "ReportFiles", "Skips", "TaskMembers",
           "TaskRow", "add_page", "build_zip", "job_zip", "report_files", "report_item",
           "task_members", "zip_chunks"]

TIMING_KEYS = ("queued_s", "matting_s", "matting_wait_s", "comparison_s", "comparison_wait_s",
               "total_s")
"""The report's timing columns, as `_timings` derives them from a task row."""


@dataclass
class JobZip:
    stream: Generator[bytes, None, None]
    """The zip's bytes (blocking: it reads files, and on a job's zip its later pages of rows
    from the event loop; iterate it in a worker thread)."""
    size: int | None
    """The exact byte count when known in advance (sized stream), else None."""
    members: int
    cleanup: Path | None = None
    """A temporary report folder to remove once the zip has been sent (partial download)."""
    prefetch: ObjectPrefetch | None = None
    """The fetching-ahead of an S3 zip's objects, stopped once the zip is sent or dropped."""
    splice: Callable[[int, threading.Event], int] | None = None
    """A zip made by worker processes: its bytes written straight into a non-blocking socket
    instead of `stream` (`ProcessZip.splice_into`: blocking, stops at the event)."""


ReportFiles = Path | Sequence[tuple[Member, str]]
"""The report files of a zip: a folder holding them, or (on S3) the objects by zip name."""


@dataclass
class TaskMembers:
    """One task's files in the zip, and the names the report gives them."""

    files: list[tuple[Member, str]] = field(default_factory=list)
    matting_output: str | None = None
    compare_output: str | None = None


def task_members(storage: Storage, job_id: str, output: str, models: Sequence[str],
                 t: TaskRow, suffix: str = PNG_SUFFIX, finder: JobFinder | None = None,
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
    if t.state == TaskState.REJECTED.value:
        # A rejected input has no outputs; files under its name belong to another input
        # (gateway.intake.output_names).
        return out
    find = (finder or JobFinder(storage)).where
    candidates = task_candidates(job_id, output, models, t.path, suffix)
    for rel, name in candidates:
        found = find(rel)
        if found is not None:
            out.files.append((found, name))
    if out.files:
        first_name = candidates[0][1]  # the first model's cut-out: docs/DESIGN.md's name
        sheet_name = candidates[-1][1]
        for _, name in out.files:
            if name == first_name:
                out.matting_output = name
            elif name == sheet_name:
                out.compare_output = name
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
    tasks: Iterable[TaskRow],
    *,
    writer: ReportWriter | None = None,
    added: ZipNames | None = None,
    suffix: str = PNG_SUFFIX,
    finder: JobFinder | None = None,
    skips: Skips | None = None,
) -> list[tuple[Member, str]]:
    """One page of tasks: its zip members, and its rows into the report `writer` if any
    (blocking: call it in a thread). `added` (the names already in the zip, carried across
    pages) keeps a name from going in twice: ingest makes output names unique
    (`gateway.intake.output_names`), and the zip holds to it even for rows made before.
    `finder`: one per zip or report (one listing per folder, or per job area on S3).
    `skips`: with `added`, where the names that went in twice were left out; without it, the
    same names left out again (`Skips`)."""
    files: list[tuple[Member, str]] = []
    items: list[ReportItem] = []
    finder = finder or JobFinder(storage)
    for t in tasks:
        found = task_members(storage, job_id, output, models, t, suffix, finder)
        if added is not None:
            added.advance(t.path)
            if skips is not None:
                skips.record(found.files, added)
            found = _unseen(found, added)
        elif skips is not None:
            found = TaskMembers(files=skips.replay(found.files))
        files += found.files
        if writer is not None:
            assert isinstance(t, Task)  # a report is written from whole rows
            items.append(report_item(t, found))
    if writer is not None:
        writer.add(items)
    return files


@dataclass
class Skips:
    """Which of a zip's candidate files (numbered in walk order) were left out as names
    already in it: recorded by the first walk (which holds the set of names) and replayed by
    the second, which then holds no name at all while the zip is sent. Empty but for rows
    made before ingest made output names unique."""

    at: set[int] = field(default_factory=set)
    seen: int = 0

    def record(self, files: Sequence[tuple[Member, str]], added: ZipNames) -> None:
        """Before `_unseen(files, added)`: notes the ones it will leave out."""
        for _, name in files:
            if name in added:
                self.at.add(self.seen)
            self.seen += 1

    def replay(self, files: Sequence[tuple[Member, str]]) -> list[tuple[Member, str]]:
        start, self.seen = self.seen, self.seen + len(files)
        if not self.at:  # nothing was left out (a job ingested with unique names)
            return list(files)
        return [f for i, f in enumerate(files, start) if i not in self.at]

    def new(self, files: Sequence[tuple[Member, str]], added: ZipNames
            ) -> list[tuple[Member, str]]:
        """`files` less the names in `added` (recorded, and then added), one at a time as
        `gateway.results.video.add_videos` leaves them out."""
        kept = []
        for f in files:
            if f[1] in added:
                self.at.add(self.seen)
            else:
                kept.append(f)
                added.add(f[1])
            self.seen += 1
        return kept


def _unseen(found: TaskMembers, added: ZipNames) -> TaskMembers:
    """`found` less the names already in the zip (then recorded as added)."""
    files = [(path, name) for path, name in found.files if name not in added]
    kept = {name for _, name in files}
    added.update(kept)
    return TaskMembers(
        files=files,
        matting_output=found.matting_output if found.matting_output in kept else None,
        compare_output=found.compare_output if found.compare_output in kept else None,
    )


def report_files(report: ReportFiles) -> list[tuple[Member, str]]:
    """report.json, report.csv and index.html at the zip's root: from a folder, or (S3)
    the objects `gateway.results.job_report.Reports.files` names."""
    if isinstance(report, Path):
        return [(report / name, name) for name in REPORT_FILES]
    return list(report)


@dataclass
class _Plan:
    """What a zip's second walk needs to find the same members again."""

    storage: Storage
    job_id: str
    output: str
    models: Sequence[str]
    suffix: str
    report: ReportFiles
    prefetch: ObjectPrefetch
    skips: Skips = field(default_factory=Skips)
    """The names the first walk left out (`Skips`), left out again."""
    marks: list[tuple[int, int]] | None = None
    """A sized zip's (members, bytes) after each page, the videos and the report, as the
    first walk counted them: the second walk must meet every mark, or the zip would not be
    the one announced (a file gone or changed since): it stops with an error instead."""


def _size(files: Sequence[tuple[Member, str]], sizer: ZipSizer | None,
          marks: list[tuple[int, int]] | None = None) -> int:
    """Counts `files` into `sizer` (blocking: a `stat` per local file), and the sizer's
    position after them into `marks`."""
    if sizer is not None:
        for member, name in files:
            sizer.add(name, member_size(member))
        if marks is not None:
            marks.append((sizer.count, sizer.offset))
    return len(files)


def _walk_page(storage: Storage, job_id: str, output: str, models: Sequence[str],
               page: Sequence[TaskRow], writer: ReportWriter | None, added: ZipNames,
               suffix: str, finder: JobFinder, skips: Skips, sizer: ZipSizer | None,
               marks: list[tuple[int, int]] | None) -> int:
    """One page of the first walk, in one thread hop: its members found (`add_page`) and
    sized (`_size`)."""
    return _size(add_page(storage, job_id, output, models, page, writer=writer, added=added,
                          suffix=suffix, finder=finder, skips=skips), sizer, marks)


def _check(writer: ZipWriter, marks: Iterator[tuple[int, int]] | None) -> None:
    """Raises when the zip sent so far is not the one sized (`_Plan.marks`)."""
    if marks is None:
        return
    count, offset = next(marks, (-1, -1))
    if writer.count != count:
        raise FileNotFoundError(f"the zip had {count} members when sized, "
                                f"{writer.count} now: a file is gone or new")
    if writer.offset != offset:
        raise ZipSizeMismatch("a file of the zip changed size since it was sized")


def _stream(plan: _Plan, pages: Iterable[Sequence[TaskRow]]) -> Generator[bytes, None, None]:
    """The zip's bytes: each page's members found again and sent, then the videos and the
    report files, then the central directory (blocking)."""
    writer = ZipWriter()
    try:
        finder = JobFinder(plan.storage)
        marks = iter(plan.marks) if plan.marks is not None else None
        skips = Skips(plan.skips.at)
        for page in pages:
            files = add_page(plan.storage, plan.job_id, plan.output, plan.models, page,
                             suffix=plan.suffix, finder=finder, skips=skips)
            yield from _send(writer, files, plan.prefetch)
            _check(writer, marks)
        videos = add_videos(plan.storage, plan.job_id, True)[0]
        yield from _send(writer, skips.replay(videos), plan.prefetch)
        _check(writer, marks)
        yield from _send(writer, report_files(plan.report), plan.prefetch)
        _check(writer, marks)
        yield from writer.finish()
    finally:
        writer.close()


def _send(writer: ZipWriter, files: Sequence[tuple[Member, str]], prefetch: ObjectPrefetch
          ) -> Iterator[bytes]:
    """`files` into the zip: a local file read (its size checked against the sizing), an
    object from the prefetch (registered a page at a time, so it fetches ahead).

    A local file up to READ_BLOCK_BYTES (a job's outputs) is read whole in one `read` and
    goes out as one piece (`ZipWriter.whole`), a bigger one in blocks (a video is never held
    whole); a plain `os.open`, no file object and no generator per member: for tiny images
    the per-member work is the whole cost."""
    for member, _ in files:
        if isinstance(member, ObjectFile):
            prefetch.register(member)
    for member, name in files:
        if isinstance(member, ObjectFile):
            yield from writer.member(name, member.size, prefetch.chunks(member))
            continue
        piece = None
        fd, st = open_named(member, name)
        try:
            if st.st_size <= READ_BLOCK_BYTES:
                piece = writer.whole(name, st.st_size, os.read(fd, st.st_size), st.st_mtime)
            else:
                yield from writer.member(name, st.st_size, blocks(fd, st.st_size),
                                         st.st_mtime)
        finally:
            os.close(fd)
        if piece is not None:
            yield piece


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
    that `zip_chunks` removes once the zip is read. The tasks are walked PAGE_ROWS at a time,
    as `job_zip` walks a job's rows (what a page's members cost is held one page at a time)."""
    pages = [tasks[i:i + PAGE_ROWS] for i in range(0, len(tasks), PAGE_ROWS)]
    if report is not None and sized and storage.is_local:
        totals, summed = _totals(tasks), ZipSizer()
        if _sizable(totals) and summed.add_many(totals.files, totals.bytes, totals.name_bytes):
            unsized = [t for t in tasks
                       if t.output_files is None and t.state != TaskState.REJECTED.value]
            _size_rows(storage, job_id, output, models, unsized, suffix, JobFinder(storage),
                       summed)
            recorded = _recorded_zip(storage, job_id, output, models, report, suffix, summed,
                                     summed.count, pages)
            if recorded is not None:
                return recorded
    tmp = None
    if report is None:
        tmp = Path(tempfile.mkdtemp(prefix="report-"))
    try:
        if tmp is not None:
            with ReportWriter(tmp, job_id, models, TIMING_KEYS) as writer:
                _prepare(storage, job_id, output, models, pages, None, None, writer, suffix)
                writer.finish()
            report = tmp
        assert report is not None
        sizer = ZipSizer() if sized else None
        marks: list[tuple[int, int]] | None = [] if sized else None
        skips = Skips()
        members = _prepare(storage, job_id, output, models, pages, sizer, marks, None,
                           suffix, report, skips)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    plan = _Plan(storage, job_id, output, models, suffix, report,
                 ObjectPrefetch(storage.objects), skips, marks)
    return JobZip(_stream(plan, pages), sizer.size if sizer is not None else None, members,
                  cleanup=tmp, prefetch=plan.prefetch)


def _prepare(storage: Storage, job_id: str, output: str, models: Sequence[str],
             pages: Sequence[Sequence[TaskRow]], sizer: ZipSizer | None,
             marks: list[tuple[int, int]] | None, writer: ReportWriter | None, suffix: str,
             report: ReportFiles | None = None, skips: Skips | None = None) -> int:
    """The first walk, held in memory (`build_zip`): sizes and/or the report. Tasks in path
    order keep few names (`WindowNames`); in any other order every name is kept."""
    videos = add_videos(storage, job_id, True)
    if writer is None:
        try:
            names = _window(output, models, suffix, videos[0])
            return _prepare_with(storage, job_id, output, models, pages, sizer, marks, None,
                                 suffix, report, skips, names, videos)
        except OutOfOrder:
            _reset(sizer, marks, skips)
    return _prepare_with(storage, job_id, output, models, pages, sizer, marks, writer, suffix,
                         report, skips, ZipNames(), videos)


def _window(output: str, models: Sequence[str], suffix: str,
            videos: Sequence[tuple[Member, str]]) -> WindowNames:
    return WindowNames(tag_spread(output, models, suffix), (name for _, name in videos))


def _reset(sizer: ZipSizer | None, marks: list[tuple[int, int]] | None,
           skips: Skips | None) -> None:
    """Back to before a first walk that stopped (`OutOfOrder`), to walk again."""
    if sizer is not None:
        sizer.offset = sizer.central = sizer.count = 0
    if marks is not None:
        marks.clear()
    if skips is not None:
        skips.at.clear()
        skips.seen = 0


def _prepare_with(storage: Storage, job_id: str, output: str, models: Sequence[str],
                  pages: Iterable[Sequence[TaskRow]], sizer: ZipSizer | None,
                  marks: list[tuple[int, int]] | None, writer: ReportWriter | None,
                  suffix: str, report: ReportFiles | None, skips: Skips | None,
                  added: ZipNames,
                  videos: tuple[list[tuple[Member, str]], list[ReportItem]]) -> int:
    skips = skips or Skips()
    finder = JobFinder(storage)
    members = 0
    for page in pages:
        members += _size(add_page(storage, job_id, output, models, page, writer=writer,
                                  added=added, suffix=suffix, finder=finder, skips=skips),
                         sizer, marks)
    files, items = videos
    files = skips.new(files, added)
    members += _size(files, sizer, marks)
    if writer is not None:
        writer.add(items)
    if report is not None:
        members += _size(report_files(report), sizer, marks)
    return members


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
    processes: int = 1,
    process_min: int = 0,
) -> JobZip:
    """The job's zip. Its rows are walked a page at a time, each page's file checks in a
    thread: now, to size a finished job's zip (`report`: its report folder or objects) or to
    write a running one's report into `partial` (an empty temporary folder; the zip is not
    sized, its files may still be replaced by a retry); and again as the zip is sent
    (`JobZip.stream` reads its pages from this event loop). Nothing is kept per member.
    A finished job's walks read a few columns a row (`output_pages`), a running one's the
    whole rows its report needs (`task_pages`). A finished job's zip of at least
    `process_min` members, every one with recorded sizes, is made by `processes` worker
    processes when that is more than one (`gateway.results.zip_processes`)."""
    if partial is None and report is not None and storage.is_local:
        totals = await db.snapshot(functools.partial(repo.output_totals_sync, job_id=job_id))
        summed = ZipSizer()
        if _sizable(totals) and summed.add_many(totals.files, totals.bytes, totals.name_bytes):
            found = JobFinder(storage)
            async for page in unsized_pages(db, job_id):  # failed tasks: a `stat` each
                await asyncio.to_thread(_size_rows, storage, job_id, output, models, page,
                                        suffix, found, summed)
            rows = (output_pages_here(db, job_id) if db.blocking_snapshots
                    else _pages_from(output_pages(db, job_id), asyncio.get_running_loop()))
            workers = processes if not totals.unsized and summed.count >= process_min else 1
            recorded = await asyncio.to_thread(
                _recorded_zip, storage, job_id, output, models, report, suffix, summed,
                summed.count, rows, workers)
            if recorded is not None:
                return recorded
    read: Callable[[Database, str], AsyncIterator[Sequence[TaskRow]]] = (
        output_pages if partial is None else task_pages)
    sizer = ZipSizer() if partial is None else None
    marks: list[tuple[int, int]] | None = [] if partial is None else None
    finder = JobFinder(storage)
    writer = None
    if partial is not None:
        writer = await asyncio.to_thread(ReportWriter, partial, job_id, models, TIMING_KEYS)
    skips = Skips()

    async def walk(added: ZipNames) -> int:
        members = 0
        async for page in read(db, job_id):
            members += await asyncio.to_thread(_walk_page, storage, job_id, output, models,
                                               page, writer, added, suffix, finder, skips,
                                               sizer, marks)
        files = skips.new(videos[0], added)
        return members + await asyncio.to_thread(_size, files, sizer, marks)

    try:
        videos = await asyncio.to_thread(add_videos, storage, job_id, True)
        if writer is None:  # a finished job's rows in path order: few names held
            try:
                members = await walk(_window(output, models, suffix, videos[0]))
            except OutOfOrder:  # a collation that does not sort by code point
                _reset(sizer, marks, skips)
                members = await walk(ZipNames())
        else:
            members = await walk(ZipNames())
            await asyncio.to_thread(writer.add, videos[1])
            await asyncio.to_thread(writer.finish)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    # the names go before the first byte: the sending holds none (`Skips`)
    folder = partial if partial is not None else report
    assert folder is not None
    members += await asyncio.to_thread(_size, report_files(folder), sizer, marks)
    plan = _Plan(storage, job_id, output, models, suffix, folder,
                 ObjectPrefetch(storage.objects), skips, marks)
    pages = _pages_from(read(db, job_id), asyncio.get_running_loop())
    return JobZip(_stream(plan, pages), sizer.size if sizer is not None else None, members,
                  cleanup=partial, prefetch=plan.prefetch)


def _totals(tasks: Sequence[Task]) -> repo.OutputTotals:
    """`repo.output_totals_sync` of tasks held in memory (`build_zip`)."""
    unsized = sized = files = size = name_bytes = 0
    for t in tasks:
        if t.output_files is None:
            unsized += t.state != TaskState.REJECTED.value
            continue
        sized += 1
        files += t.output_files
        size += t.output_bytes or 0
        name_bytes += t.output_name_bytes or 0
    return repo.OutputTotals(unsized, sized, files, size, name_bytes)


def _sizable(totals: repo.OutputTotals) -> bool:
    """Whether a finished job's zip is sized from its recorded sizes: some row has them
    (a job from before the columns has none, and may hold names ingest would now refuse:
    it is sized and deduplicated by the two walks, as before)."""
    return totals.sized > 0


def _size_rows(storage: Storage, job_id: str, output: str, models: Sequence[str],
               rows: Iterable[TaskRow], suffix: str, finder: JobFinder, sizer: ZipSizer
               ) -> int:
    """The members of rows without recorded sizes into `sizer`, a `stat` each (blocking)."""
    files = [f for t in rows
             for f in task_members(storage, job_id, output, models, t, suffix, finder).files]
    return _size(files, sizer)


def _recorded_zip(storage: Storage, job_id: str, output: str, models: Sequence[str],
                  report: ReportFiles, suffix: str, sizer: ZipSizer, members: int,
                  pages: Iterable[Sequence[TaskRow]], processes: int = 1) -> JobZip | None:
    """A finished job's zip sized before its first byte without a walk of its rows: `sizer`
    holds the recorded sizes' sums (`repo.output_totals_sync`, one aggregate query) and the
    few rows without them (a `stat` each); here the report's three files are added
    (blocking: it stats them and lists the videos). None when it cannot be: S3, a job
    with videos (their names are checked against the frames' by a walk), or members past
    4 GiB (ZIP64 offsets: sized one by one by the walk)."""
    if not storage.is_local or sizer.offset >= ZIP64_LIMIT:
        return None
    if add_videos(storage, job_id, True)[0]:
        return None
    members += _size(report_files(report), sizer)
    if sizer.offset >= ZIP64_LIMIT:
        return None
    if processes > 1 and isinstance(storage.objects, LocalStore):
        files = []
        for member, name in report_files(report):
            assert not isinstance(member, ObjectFile)  # a local store's report files
            files.append((Path(member), name))
        rows = itertools.chain.from_iterable(cast(Iterable[Sequence[SizedRow]], pages))
        made = ProcessZip(Job(storage.objects.root, job_id, output, models, suffix), rows,
                          files, sizer.count, sizer.central, sizer.offset, processes)
        return JobZip(made.pieces(), sizer.size, members, splice=made.splice_into)
    plan = _Plan(storage, job_id, output, models, suffix, report,
                 ObjectPrefetch(storage.objects))
    return JobZip(_stream_recorded(plan, pages, sizer.offset), sizer.size, members,
                  prefetch=plan.prefetch)


def _stream_recorded(plan: _Plan, pages: Iterable[Sequence[TaskRow]], end: int
                     ) -> Generator[bytes, None, None]:
    """`_stream` of a zip sized from recorded sizes (`_recorded_zip`): each task's files
    are checked against its row before any of their bytes go out (`zip_tasks.task_pieces`),
    no member may pass the announced end of the members (`end`), and the members must meet
    it before the central directory is written: a file gone, added or resized since the
    task completed stops the zip with an error, short of its Content-Length, never a zip of
    other contents under the announced length."""
    writer = ZipWriter()
    folders = OpenFolders(plan.storage)
    try:
        candidates = candidates_of(plan.job_id, plan.output, plan.models, plan.suffix)
        yield from task_pieces(writer, folders, candidates, itertools.chain.from_iterable(pages),
                               end)
        yield from _send_report(writer, plan.report, end)
        if writer.offset != end:
            raise ZipSizeMismatch(f"the zip's members came to {writer.offset} bytes, "
                                  f"{end} announced: a file is gone or changed")
        yield from writer.finish()
    finally:
        folders.close()
        writer.close()


def _send_report(writer: ZipWriter, report: ReportFiles, end: int) -> Iterator[bytes]:
    """A local zip's report files, after its tasks' members."""
    files = []
    for member, name in report_files(report):
        assert not isinstance(member, ObjectFile)  # a local store's zip
        files.append((member, name))
    yield from send_named(writer, files, end)


def _pages_from(rows: AsyncIterator[Sequence[TaskRow]], loop: asyncio.AbstractEventLoop
                ) -> Iterator[Sequence[TaskRow]]:
    """The job's pages of rows for a blocking iterator in a worker thread, read on `loop`
    (`rows`: `task_pages` or `output_pages`) one page ahead: the next page's query runs in
    a reader thread while this one's files are sent, instead of the sending waiting for
    each page in turn (issue 17, the download's fourth pass). At most two pages are held."""
    pages = rows.__aiter__()
    ahead = asyncio.run_coroutine_threadsafe(_next(pages), loop)
    try:
        while True:
            try:
                page = ahead.result()
            except StopAsyncIteration:
                return
            ahead = asyncio.run_coroutine_threadsafe(_next(pages), loop)
            yield page
    finally:
        ahead.cancel()  # a zip abandoned: its read ahead is not waited for


async def _next(pages: AsyncIterator[Sequence[TaskRow]]) -> Sequence[TaskRow]:
    return await anext(pages)


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


def zip_chunks(job_zip: JobZip, size: int = ZIP_CHUNK_BYTES) -> Generator[bytes, None, None]:
    """The zip's bytes in pieces of about `size` (a blocking iterator that reads files:
    iterate it in a thread; the download runs it in one of its own, a few pieces ahead of
    the socket: `gateway.results.send_ahead`); a partial download's temporary report folder
    goes once the zip is sent or abandoned.

    The zip writer yields a header, the data and a descriptor per member: for a job of
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
        job_zip.stream.close()  # an abandoned zip drops its spooled central directory now
        if job_zip.prefetch is not None:
            job_zip.prefetch.close()
        if job_zip.cleanup is not None:
            shutil.rmtree(job_zip.cleanup, ignore_errors=True)
