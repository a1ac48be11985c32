"""A job's report files on disk: written once when the job ends, served by every download.

Size decision (README, "The report"): report.json, report.csv and index.html grow with the job
(a million items is hundreds of MB), so they are never built per request nor held in memory.
When a job reaches completed, completed_with_errors or failed, the scheduler's maintenance
pass writes them into `DATA_DIR/reports/<job>/`, walking the task rows a page at a time with
the writing in a worker thread (`ReportWriter`: constant memory). A job that finished while
the gateway was down, or whose writing was cut short, has no complete folder and gets it on
the next pass; a download that comes first writes it itself — once, however many downloads
wait for it. A running job's `?partial=1` download writes its own report into a temporary
folder during the zip's walk (`gateway.results.zip_stream.job_zip`), at most
`PARTIAL_AT_ONCE` at a time, removed once the zip has been sent.

On S3 (`STORAGE_URL=s3://…`) the three files are objects, `reports/<job>/<name>`: written
into a temporary folder of the gateway's own DATA_DIR as above, then uploaded, report.json
first and index.html last; any gateway finds them there (`Reports.files`). A partial
download's report stays a temporary local folder on the gateway that serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Job
from gateway.results.members import JobFinder, Member, ObjectFile
from gateway.results.pages import task_pages
from gateway.results.report import REPORT_FILES, ReportWriter
from gateway.results.video import add_videos, assemble_videos
from gateway.results.zip_stream import TIMING_KEYS, add_page
from shared.states import JobState
from shared.storage import REPORTS, Storage

__all__ = ["PARTIAL_AT_ONCE", "REPORTED_STATES", "RETRY_FAILED_S", "MissingPass", "Reports",
           "job_models"]

log = logging.getLogger("gateway.results.job_report")

REPORTED_STATES = (JobState.COMPLETED, JobState.COMPLETED_WITH_ERRORS, JobState.FAILED)
"""Final states whose files stay: a cancelled job's files (and report) are removed."""
PARTIAL_AT_ONCE = 4
"""Partial downloads that write their report at the same time; more wait their turn (each
costs disk and a thread, not memory)."""
RETRY_FAILED_S = 60.0
"""After a failed report write (disk full, say), the maintenance pass tries that job again
only this much later."""


class MissingPass:
    """A background pass over the finished jobs (REPORTED_STATES) that makes what each one
    lacks (its report files, its stored zip), one job after the other: the jobs seen with it
    are not looked at again, and one whose making failed waits RETRY_FAILED_S."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.done: set[str] = set()
        """Jobs seen with what the pass makes (so a pass stats each job once)."""
        self._later: dict[str, float] = {}
        """Jobs whose making failed, and when to try again."""

    async def run(self, present: Callable[[str], object],
                  make: Callable[[Job], Awaitable[bool]]) -> int:
        """`make(job)` for each finished job where `present(job_id)` (blocking: run in a
        thread) is falsy; the number made. `make` answers False for a failure (it says
        why itself): that job is tried again RETRY_FAILED_S later."""
        async with self.db.read() as s:
            ids = [i for st in REPORTED_STATES for i in await repo.jobs_in_state(s, st)]
        now = time.monotonic()
        todo = [i for i in ids if i not in self.done and self._later.get(i, 0) <= now]
        made = 0
        for job_id in todo:
            if await asyncio.to_thread(present, job_id):
                self.done.add(job_id)
                continue
            async with self.db.read() as s:
                job = await repo.get_job(s, job_id)
            if job is None or JobState(job.state) not in REPORTED_STATES:
                continue
            if await make(job):
                self.done.add(job_id)
                made += 1
            else:
                self._later[job_id] = time.monotonic() + RETRY_FAILED_S
        self.done.intersection_update(ids)  # forget jobs that were deleted
        return made


def job_models(job: Job) -> list[str]:
    """The job's engines in the user's order."""
    return [m for m in job.model.split(",") if m]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REPORT_FILES)


def report_key(job_id: str, name: str) -> str:
    """A report file's object key: `reports/<job>/<name>`."""
    return f"{REPORTS}/{job_id}/{name}"


class Reports:
    """The report folders of one gateway: who writes them, and when."""

    def __init__(self, db: Database, storage: Storage) -> None:
        self.db, self.storage = db, storage
        self._writing: dict[str, asyncio.Task[None]] = {}
        self._missing = MissingPass(db)
        """Jobs seen with a complete report folder (so a pass stats each job once), and those
        whose writing failed."""
        self._partial = asyncio.Semaphore(PARTIAL_AT_ONCE)

    def folder(self, job_id: str) -> Path:
        return self.storage.job_reports(job_id)

    def _complete(self, job_id: str) -> bool:
        """All three files are there (blocking)."""
        if self.storage.is_local:
            return _complete(self.folder(job_id))
        return all(self.storage.objects.exists(report_key(job_id, n)) for n in REPORT_FILES)

    async def files(self, job: Job) -> list[tuple[Member, str]]:
        """The finished job's three report files by zip name (written first if needed): the
        files of its folder, or on S3 its objects with their sizes."""
        folder = await self.final(job)
        if self.storage.is_local:
            return [(folder / n, n) for n in REPORT_FILES]

        def sizes() -> list[tuple[Member, str]]:
            out: list[tuple[Member, str]] = []
            for n in REPORT_FILES:
                size = self.storage.objects.size(report_key(job.id, n))
                if size is None:
                    raise FileNotFoundError(f"report file {n} of job {job.id} is gone")
                out.append((ObjectFile(report_key(job.id, n), size), n))
            return out

        return await asyncio.to_thread(sizes)

    async def write(self, job: Job, folder: Path) -> None:
        """The job's three report files into `folder`, a page of rows at a time."""
        models = job_models(job)
        writer = await asyncio.to_thread(ReportWriter, folder, job.id, models, TIMING_KEYS)
        finder = JobFinder(self.storage)
        try:
            async for page in task_pages(self.db, job.id):
                await asyncio.to_thread(add_page, self.storage, job.id, job.output, models, page,
                                        writer=writer, suffix=job.cutout_suffix, finder=finder)
            _, items = await asyncio.to_thread(add_videos, self.storage, job.id, True)
            await asyncio.to_thread(writer.add, items)
            await asyncio.to_thread(writer.finish)
        except BaseException:
            writer.abort()
            raise

    async def final(self, job: Job) -> Path:
        """The finished job's report folder, written first if it is not complete yet."""
        folder = self.folder(job.id)
        task = self._writing.get(job.id)
        if task is None:
            if await asyncio.to_thread(self._complete, job.id):
                self._missing.done.add(job.id)
                return folder
            task = asyncio.create_task(self._write_final(job, folder), name=f"report-{job.id}")
            self._writing[job.id] = task
            task.add_done_callback(lambda _t: self._writing.pop(job.id, None))
        # shielded: a download that gives up does not cut the write others wait for
        await asyncio.shield(task)
        return folder

    async def _write_final(self, job: Job, folder: Path) -> None:
        started = time.monotonic()
        # The job's videos are put together first (README, "Video"), so the report and every
        # download that waits for it find them.
        await asyncio.to_thread(assemble_videos, self.storage, job.id)
        if self.storage.is_local:
            await self.write(job, folder)
        else:
            await self._write_objects(job)
        self._missing.done.add(job.id)
        log.info("report of job %s written in %.1f s", job.id, time.monotonic() - started)

    async def _write_objects(self, job: Job) -> None:
        """S3: the report written into a local temporary folder, then uploaded file by file
        (index.html last), then the folder removed."""
        base = self.storage.root / REPORTS
        await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".s3-", dir=base))
        try:
            await self.write(job, tmp)
            for name in REPORT_FILES:
                await asyncio.to_thread(self.storage.objects.put_file,
                                        report_key(job.id, name), tmp / name)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)

    async def write_missing(self) -> int:
        """Write the report of every finished job that lacks one, one job after the other;
        the number written. (The maintenance pass runs it in the background.)"""

        async def write(job: Job) -> bool:
            try:
                await self.final(job)
            except Exception:
                log.exception("writing the report of job %s failed; trying again later", job.id)
                return False
            return True

        return await self._missing.run(self._complete, write)

    @contextlib.asynccontextmanager
    async def partial_folder(self, job_id: str) -> AsyncIterator[Path]:
        """An empty temporary folder for a partial download's report (under the job's report
        folder, so deleting the job removes a leftover too), at most PARTIAL_AT_ONCE at a
        time. The caller removes it once the zip has been sent."""
        async with self._partial:
            base = self.folder(job_id)
            await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
            tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".partial-", dir=base))
            try:
                yield tmp
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
