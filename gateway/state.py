"""Everything one gateway process holds: settings, storage, the database, scheduler, and the
background ingests (kept by reference so they are neither garbage-collected nor orphaned)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.intake.ingest import ingest_job, unexpected_error
from gateway.intake.landing import drop_inputs
from gateway.intake.tus_uploads import TusUploads
from gateway.metrics import GatewayMetrics
from gateway.pipeline.scheduler import Scheduler
from gateway.pipeline.sync_remove import SyncRemover
from shared.resources import resource_loop
from shared.settings import Settings
from shared.states import JobState
from shared.storage import Storage

__all__ = ["DETAIL_CACHE_MAX_JOBS", "GatewayState"]

log = logging.getLogger("gateway")

DETAIL_CACHE_MAX_JOBS = 4096
"""`detail_cache` is dropped whole past this many jobs: a bound on memory without an LRU, and
only the jobs being polled come back."""


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

    def __post_init__(self) -> None:
        self.tus = TusUploads(self.db, self.storage, self.settings, self.start_ingest)
        self.sync = SyncRemover(self.settings, self.storage)

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
        await self.recover()
        await self.scheduler.start()
        await self.sync.start()
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

    async def recover(self) -> None:
        """Make a restart safe: uploads cut by the crash are dropped, interrupted ingests are
        redone from the stored upload (`ingest_job` wipes the dead attempt's rows and files),
        in-flight stage requests go back to their queues.

        An ingest that was already started MAX_RETRIES times is not redone: an archive that
        kills the gateway (memory, a library crash) would otherwise kill it at every start-up.
        That job fails with the reason, and its files go."""
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
        redo, given_up = [], []
        limit = self.settings.max_retries
        for job_id in await repo.jobs_in_state(s, JobState.INGESTING):
            job = await repo.get_job(s, job_id)
            attempts = (job.ingest_attempts or 0) if job is not None else 0
            if attempts < limit:
                redo.append(job_id)
                continue
            log.warning("job %s: ingest crashed %d times; giving up", job_id, attempts)
            await repo.delete_job(s, job_id, keep_job=True)
            await repo.set_job(
                s, job_id, state=JobState.FAILED.value, total=0, finished_at=time.time(),
                error=f"ingest crashed {attempts} times (the gateway stopped during it; "
                      f"MAX_RETRIES={limit})")  # fmt: skip
            given_up.append(job_id)
        return redo, given_up

    # --- ingest in the background ------------------------------------------------------------
    def start_ingest(self, job_id: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._ingest(job_id), name=f"ingest-{job_id}")
        self.ingests[job_id] = task
        task.add_done_callback(lambda _t: self.ingests.pop(job_id, None))
        return task

    async def _ingest(self, job_id: str) -> None:
        try:
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
            self.scheduler.wake()

    async def cancel_ingest(self, job_id: str) -> None:
        task = self.ingests.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
