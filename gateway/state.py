"""Everything one gateway process holds: settings, storage, the database, scheduler, and the
background ingests (kept by reference so they are neither garbage-collected nor orphaned)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.db.locks import GATEWAY_LOCK_SPACE, JOB_LOCK_SPACE, Chore, lock_key
from gateway.intake.ingest import ingest_job, unexpected_error
from gateway.intake.ingest_process import IngestChildDied, ingest_in_child
from gateway.intake.landing import drop_inputs, upload_source
from gateway.intake.tus_uploads import TusUploads
from gateway.metrics import GatewayMetrics
from gateway.pipeline.scheduler import Scheduler
from gateway.pipeline.sync_remove import SyncRemover
from shared.resources import resource_loop
from shared.settings import Settings
from shared.states import JobState
from shared.storage import PathOutsideDataDir, Storage

__all__ = ["DETAIL_CACHE_MAX_JOBS", "GatewayState", "zip_members"]

log = logging.getLogger("gateway")

DETAIL_CACHE_MAX_JOBS = 4096
"""`detail_cache` is dropped whole past this many jobs: a bound on memory without an LRU, and
only the jobs being polled come back."""


_EOCD = b"PK\x05\x06"
_EOCD_SEARCH = 22 + 65535
"""The end-of-central-directory record: 22 bytes and a comment of up to 64 KiB, last."""


def zip_members(path: Path | None) -> int | None:
    """How many members the zip at `path` says it has (its end record's count: one read of
    the file's last 64 KiB, whatever the archive holds); None for no local file, not a zip
    (a tar, an image, a broken upload) or a ZIP64 count: those go by size alone, and the
    ingest gives any reason. Blocking."""
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _EOCD_SEARCH))
            tail = f.read()
    except OSError:
        return None
    at = len(tail)
    while (at := tail.rfind(_EOCD, 0, at)) >= 0:
        # the record whose comment length reaches the file's end exactly: the signature's
        # bytes inside a comment are no record (a forged one only moves the ingest between
        # the gateway and a child; its limits are the same in both)
        if len(tail) - at - 22 == int.from_bytes(tail[at + 20:at + 22], "little"):
            count = int.from_bytes(tail[at + 10:at + 12], "little")  # entries in total
            return None if count == 0xFFFF else count  # 0xFFFF: in the ZIP64 record
    return None


@dataclass
class GatewayState:
    settings: Settings
    storage: Storage
    db: Database
    """The task database: `db.write()` is the process's one write path, `db.read()` its
    snapshot reads (they never wait for a writer)."""
    metrics: GatewayMetrics
    scheduler: Scheduler
    ingests: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    detail_cache: dict[str, tuple[float, str, dict[str, Any]]] = field(default_factory=dict)
    """job id → (valid until, job state, `/status` stage aggregates)."""
    detail_refresh: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """`/status` stage details being recomputed in the background (one per job): a poll
    answers from the cache meanwhile, never waiting for a scan of a big job's rows."""
    tus: TusUploads = field(init=False)
    """Resumable uploads: their rows, locks, sweeper and reconciler."""
    sync: SyncRemover = field(init=False)
    """`/api/remove`'s way to the matting stage: the sync lane, its client and scratch files."""
    tus_sweeper: asyncio.Task[None] | None = None
    event_streams: int = 0
    """Live progress streams open now (`gateway.api.events`), against MAX_EVENT_STREAMS."""
    resources: asyncio.Task[None] | None = None
    """The debug log's resource lines (`shared.resources`)."""
    started_at: float = field(default_factory=time.time)
    held_jobs: set[str] = field(default_factory=set)
    """Jobs whose lock this gateway holds while it receives or ingests them (Postgres: a
    session advisory lock per job, `hold_job`; SQLite: bookkeeping only)."""

    def __post_init__(self) -> None:
        self.tus = TusUploads(self.db, self.storage, self.settings, self.start_ingest)
        self.sync = SyncRemover(self.settings, self.storage)
        self.scheduler.on_maintenance = self.take_over_jobs

    @classmethod
    async def open(cls, settings: Settings, **scheduler_opts: Any) -> GatewayState:
        settings = settings.without_raw_keys()  # the keys' hashes are all the gateway needs
        storage = Storage.from_settings(settings)
        storage.ensure_layout()
        db = await Database.open(settings)
        metrics = GatewayMetrics()
        scheduler = Scheduler(settings, db, storage, metrics, **scheduler_opts)
        return cls(settings, storage, db, metrics, scheduler)

    async def start(self) -> None:
        await self.claim_gateway_id()
        await self.recover()
        await self.scheduler.start()
        await self.sync.start()
        if await self.db.chores.holds(Chore.TUS):
            await self.tus.reconcile_uploads()
        self.tus_sweeper = asyncio.create_task(self.tus.sweep_loop(), name="tus-sweeper")
        self.resources = asyncio.create_task(
            resource_loop("gateway", self.settings.resource_log_interval_s, self.queues),
            name="resources")

    async def queues(self) -> dict[str, Any]:
        """The resource line's queue figures: tasks by state, stage calls in flight, ingests."""
        async with self.db.read() as s:
            tasks, _ = await repo.global_counts(s)
        inflight = {str(stage): len(calls) for stage, calls in self.scheduler.inflight.items()}
        return {"tasks": tasks, "in_flight": inflight, "ingests": len(self.ingests)}

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.sync.close()
        tasks = list(self.ingests.values())
        tasks += [t for t in (self.tus_sweeper, self.resources) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.db.close()

    async def claim_gateway_id(self) -> None:
        """Postgres: hold this gateway's GATEWAY_ID lock for as long as it lives (the others'
        maintenance releases a dead gateway's leases by it). Two live gateways with one id
        would release each other's work: the second one refuses to start."""
        key = lock_key(GATEWAY_LOCK_SPACE, self.settings.gateway_name)
        if not await self.db.chores.take(key):
            raise RuntimeError(f"GATEWAY_ID {self.settings.gateway_name!r} is in use by another "
                               "live gateway on this database: give each gateway its own")

    async def recover(self) -> None:
        """Make a restart safe: uploads cut by the crash are dropped, interrupted ingests are
        redone from the stored upload (`ingest_job` wipes the dead attempt's rows and files),
        in-flight stage requests go back to their queues.

        An ingest that was already started MAX_RETRIES times is not redone: an archive that
        kills the gateway (memory, a library crash) would otherwise kill it at every start-up.
        That job fails with the reason, and its files go.

        On Postgres other gateways may be receiving, ingesting and dispatching right now:
        only this gateway's own leases are released (`GATEWAY_ID`), and cut uploads and
        interrupted ingests are left to `take_over_jobs`, which touches a job only once it
        holds the job's lock, i.e. once the gateway that had it is gone."""
        if self.db.postgres:
            async with self.db.write() as s:
                released = await transitions.release_dispatched(
                    s, by=self.settings.gateway_name)
            if released:
                log.info("recovered: %d of this gateway's leases released", released)
            return
        async with self.db.write() as s:
            cut = await repo.jobs_in_state(s, JobState.UPLOADING)
            for job_id in cut:
                await repo.delete_job(s, job_id)
            redo, given_up = await self._ingests_to_redo(s)
            released = await transitions.release_dispatched(s)
        for job_id in cut:
            await asyncio.to_thread(self.storage.remove_job, job_id)
        for job_id in given_up:
            await asyncio.to_thread(drop_inputs, self.storage, job_id)
        for job_id in redo:
            self.start_ingest(job_id)
        if cut or redo or given_up or released:
            log.info("recovered: %d cut uploads removed, %d ingests restarted, %d ingests "
                     "given up, %d leases released", len(cut), len(redo), len(given_up),
                     released)

    async def _ingests_to_redo(self, s: AsyncSession) -> tuple[list[str], list[str]]:
        """(jobs whose ingest restarts, jobs failed for crashing it MAX_RETRIES times)."""
        redo: list[str] = []
        given_up: list[str] = []
        for job_id in await repo.jobs_in_state(s, JobState.INGESTING):
            (redo if await self._redo_or_give_up(s, job_id) else given_up).append(job_id)
        return redo, given_up

    async def _redo_or_give_up(self, s: AsyncSession, job_id: str) -> bool:
        """True: the interrupted ingest is to be redone; False: it crashed MAX_RETRIES times
        and the job is failed here, with the reason."""
        limit = self.settings.max_retries
        job = await repo.get_job(s, job_id)
        attempts = (job.ingest_attempts or 0) if job is not None else 0
        if attempts < limit:
            return True
        log.warning("job %s: ingest crashed %d times; giving up", job_id, attempts)
        await repo.delete_job(s, job_id, keep_job=True)
        await repo.set_job(
            s, job_id, state=JobState.FAILED.value, total=0, finished_at=time.time(),
            error=f"ingest crashed {attempts} times (the gateway stopped during it; "
                  f"MAX_RETRIES={limit})")  # fmt: skip
        return False

    # --- jobs of a gateway that died (several gateways on one Postgres) ----------------------
    async def hold_job(self, job_id: str) -> bool:
        """Take the job's lock for as long as this gateway receives or ingests it; False when
        another live gateway has it. Always True on SQLite (one gateway)."""
        if job_id in self.held_jobs:
            return True
        if not await self.db.chores.take(lock_key(JOB_LOCK_SPACE, job_id)):
            return False
        self.held_jobs.add(job_id)
        return True

    async def release_job(self, job_id: str) -> None:
        if job_id in self.held_jobs:
            self.held_jobs.discard(job_id)
            await self.db.chores.give(lock_key(JOB_LOCK_SPACE, job_id))

    async def take_over_jobs(self) -> None:
        """Postgres, under the INGESTS chore (one gateway at a time), at each maintenance pass:
        a job still `uploading` or `ingesting` whose lock is free has lost its gateway. A cut
        upload is removed (as `recover` does on SQLite); an interrupted ingest is redone here,
        under the job's lock, so exactly one gateway redoes it (or it is given up after
        MAX_RETRIES attempts)."""
        if not self.db.postgres or not await self.db.chores.holds(Chore.INGESTS):
            return
        async with self.db.read() as s:
            jobs = [*await repo.jobs_in_state(s, JobState.UPLOADING),
                    *await repo.jobs_in_state(s, JobState.INGESTING)]
        for job_id in jobs:
            if job_id in self.held_jobs or job_id in self.ingests:
                continue
            if not await self.hold_job(job_id):
                continue  # its gateway is alive
            redo = False
            try:
                async with self.db.write() as s:
                    job = await repo.get_job(s, job_id)  # afresh, under the lock
                    state = job.state if job is not None else None
                    if state == JobState.UPLOADING.value:
                        await repo.delete_job(s, job_id)
                    elif state == JobState.INGESTING.value:
                        redo = await self._redo_or_give_up(s, job_id)
                if state == JobState.UPLOADING.value:
                    log.info("job %s: its gateway died during the upload; removed", job_id)
                    await asyncio.to_thread(self.storage.remove_job, job_id)
                elif state == JobState.INGESTING.value and not redo:
                    await asyncio.to_thread(drop_inputs, self.storage, job_id)
            finally:
                if redo:
                    log.info("job %s: its gateway died during the ingest; taken over", job_id)
                    self.start_ingest(job_id)  # keeps the lock until the ingest ends
                else:
                    await self.release_job(job_id)

    # --- ingest in the background ------------------------------------------------------------
    def start_ingest(self, job_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._ingest(job_id), name=f"ingest-{job_id}")
        self.ingests[job_id] = task
        task.add_done_callback(lambda _t: self.ingests.pop(job_id, None))
        return task

    async def _ingest(self, job_id: str) -> None:
        if not await self.hold_job(job_id):
            # another gateway took the job over first (`take_over_jobs`): it ingests it
            log.info("job %s: another gateway ingests it", job_id)
            return
        try:
            if await self._ingests_in_child(job_id):
                await self._ingest_in_child(job_id)
            else:
                await ingest_job(job_id, self.db, self.storage, self.settings)
        except Exception as exc:
            log.exception("ingest of job %s failed", job_id)
            async with self.db.write() as s:
                await repo.set_job(
                    s, job_id,
                    only_if=[JobState.UPLOADING.value, JobState.INGESTING.value,
                             JobState.RUNNING.value],
                    state=JobState.FAILED.value, error=unexpected_error(exc),
                    finished_at=time.time(),
                )
        finally:
            await self.release_job(job_id)
            self.scheduler.wake()

    async def _ingests_in_child(self, job_id: str) -> bool:
        """Whether the job's upload is big enough for a child process (INGEST_CHILD_MIN_BYTES,
        and INGEST_CHILD_MIN_MEMBERS for a zip); a missing one is left to `ingest_job`, which
        fails the job with the reason."""
        async with self.db.read() as s:
            job = await repo.get_job(s, job_id)
        if job is None or not job.upload_path:
            return False
        limit = self.settings.ingest_child_min_bytes
        try:
            upload = await asyncio.to_thread(upload_source, self.storage, job.upload_path)
        except PathOutsideDataDir:
            return False
        if upload is None or upload.size < limit:
            return False
        few = self.settings.ingest_child_min_members
        if limit == 0 or few == 0:
            return True  # "0: every upload" / "0: size alone decides"
        members = await asyncio.to_thread(zip_members, upload.local)
        return members is None or members >= few

    async def _ingest_in_child(self, job_id: str) -> None:
        """`ingest_job` in a child process (`gateway.intake.ingest_process`). A child that
        dies mid-ingest is treated as a gateway crash is by `recover`: the ingest is redone
        (the dead attempt's rows and files wiped) until it was started MAX_RETRIES times,
        then the job fails with the reason. Never more children than MAX_RETRIES + 1, even
        when one dies before it counts its attempt."""
        for _ in range(self.settings.max_retries + 1):
            try:
                await ingest_in_child(job_id, self.settings, self.db.note_outside_write)
                return
            except IngestChildDied as exc:
                log.warning("%s", exc)
            async with self.db.write() as s:
                job = await repo.get_job(s, job_id)
                if job is None or job.state not in (JobState.UPLOADING.value,
                                                    JobState.INGESTING.value):
                    return  # cancelled or deleted meanwhile
                if await self._redo_or_give_up(s, job_id):
                    continue
            await asyncio.to_thread(drop_inputs, self.storage, job_id)
            return
        raise RuntimeError(f"the ingest process of job {job_id} kept dying")

    async def cancel_ingest(self, job_id: str) -> None:
        task = self.ingests.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
