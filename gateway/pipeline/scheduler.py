"""The stage scheduler: leases tasks from the DB, calls the two stage APIs, records answers.

One loop per stage keeps at most `<stage>_concurrency` tasks in flight, sent
STAGE_BATCH_SIZE to a call (`<route>/batch`: the hops' per-request cost is paid once a batch).
Answers go to one writer that records them in batches (one short transaction for all answers
that arrived meanwhile), and every write goes through `Database.write()`, the process's one
write lock: the gateway is the database's sole writer, so its writes never wait on SQLite's
busy handler.
A maintenance loop requeues due retries, reclaims expired leases, closes finished jobs and
fires their webhooks; the writer closes a job itself as the answer ending its last task lands
(and wakes the maintenance pass), so a job's end waits for no timer (issue 14).
See `gateway.pipeline.stage_calls` for what counts as a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, assert_never

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.db.locks import GATEWAY_LOCK_SPACE, Chore, lock_key
from gateway.metrics import GatewayMetrics
from gateway.pipeline.callbacks import WebhookSender
from gateway.pipeline.result_cache import ResultCache
from gateway.pipeline.stage_calls import (
    Outcome,
    Recorded,
    call_stage,
    call_stage_batch,
    request_id_for,
)
from gateway.results.job_report import Reports
from gateway.results.output_sizes import note_sizes
from gateway.results.stored_zip import StoredZips
from gateway.results.summary import job_summary
from shared.formats import OutputMode
from shared.log_context import bind
from shared.schemas import (
    ComparisonParams,
    ComparisonRequest,
    MatteRef,
    MattingParams,
    MattingRequest,
    StageRequest,
)
from shared.settings import Settings
from shared.stages import Stage
from shared.states import JobState, TaskState
from shared.storage import Storage, model_output_rel
from shared.timing import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    MAINTENANCE_INTERVAL_S,
    SCHEDULER_IDLE_BACKOFF,
    SCHEDULER_IDLE_S,
    STAGE_PAUSE_BASE_S,
    STAGE_PAUSE_MAX_S,
    STAGE_REQUEST_TIMEOUT_S,
)

__all__ = ["Scheduler"]

log = logging.getLogger("gateway.pipeline.scheduler")
WRITE_BATCH = 512
"""Most answers recorded in one transaction."""
CLAIM_SLOTS_DIVISOR = 4
"""With requests in flight, a stage claims again only once a quarter of its slots are free:
one claim transaction per batch of answers, not one per answer."""
SPARE_CONNECTIONS = 8
"""HTTP connections beyond the two stages' slots (webhooks have their own client)."""


@dataclass
class _Answer:
    stage: Stage
    claimed: transitions.Claimed
    output: str
    outcome: Outcome
    sent_at: float


def _ended_jobs(batch: list[_Answer], kinds: list[Recorded]) -> set[str]:
    """The jobs of answers that ended their task (the last stage done, or failed for good):
    those the writer tries to close in the same transaction (`Scheduler._write_batch`)."""
    return {a.claimed.job_id for a, kind in zip(batch, kinds, strict=True)
            if kind is Recorded.FAILED or (kind is Recorded.DONE and a.stage.next is None)}


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: Storage,
        metrics: GatewayMetrics | None = None,
        *,
        lease_s: float | None = None,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        idle_s: float = SCHEDULER_IDLE_S,
        maintenance_s: float = MAINTENANCE_INTERVAL_S,
        request_timeout: float = STAGE_REQUEST_TIMEOUT_S,
        callback_backoff: float = BACKOFF_BASE_S,
        reports: Reports | None = None,
    ) -> None:
        self.settings, self.db, self.storage = settings, db, storage
        self.reports = reports or Reports(db, storage)
        """Finished jobs' report files: the maintenance pass writes those that are missing."""
        self._report_pass: asyncio.Task[int] | None = None
        self.zips = (StoredZips(db, storage, settings)
                     if settings.zip_store and storage.is_local else None)
        """Finished jobs' stored zips (ZIP_STORE): a pass of their own writes those missing,
        beside the report pass, so that a big zip being written never holds back a report."""
        self._zip_pass: asyncio.Task[int] | None = None
        self.on_maintenance: Callable[[], Awaitable[None]] | None = None
        """Run at each maintenance pass (the gateway's takeover of dead gateways' ingests)."""
        self.metrics = metrics or GatewayMetrics()
        self.lease_s = settings.lease_s if lease_s is None else lease_s
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.idle_s, self.maintenance_s = idle_s, maintenance_s
        self.request_timeout, self.callback_backoff = request_timeout, callback_backoff
        self.concurrency = {s: s.concurrency(settings) for s in transitions.STAGES}
        self.urls = {s: s.stage_url(settings) for s in transitions.STAGES}
        self.batch_urls = {s: s.batch_url(settings) for s in transitions.STAGES}
        self.batch_size = max(1, settings.stage_batch_size)
        """Tasks per stage call (STAGE_BATCH_SIZE): 1 keeps one plain call per task."""
        # claim in batches: a quarter of the slots, and at least one full stage call
        self._low_water = {s: min(n, max(1, n // CLAIM_SLOTS_DIVISOR, self.batch_size))
                           for s, n in self.concurrency.items()}
        self._inflight_items = {s: 0 for s in transitions.STAGES}
        """Tasks in flight per stage: what `<stage>_concurrency` bounds (a call may carry
        several)."""
        self.inflight: dict[Stage, set[asyncio.Task[None]]] = {s: set() for s in transitions.STAGES}
        self._wake = {s: asyncio.Event() for s in transitions.STAGES}
        self._paused_until = {s: 0.0 for s in transitions.STAGES}
        self._pause_streak = {s: 0 for s in transitions.STAGES}
        self._loops: list[asyncio.Task[None]] = []
        self._callbacks: dict[str, asyncio.Task[None]] = {}
        self.client: httpx.AsyncClient | None = None
        self.webhooks: WebhookSender | None = None
        """The webhooks' own client: never `client`, whose pool is the stages'."""
        self._answers: asyncio.Queue[_Answer] = asyncio.Queue()
        self._maintenance_due = asyncio.Event()
        """Set when the writer closed a job: the maintenance pass (webhook, report) runs
        now instead of up to MAINTENANCE_INTERVAL_S later."""
        self.cache = ResultCache(db, storage)
        """The content-hash cache: a matting task whose result exists is not dispatched."""

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        limits = httpx.Limits(max_connections=sum(self.concurrency.values()) + SPARE_CONNECTIONS)
        self.client = httpx.AsyncClient(timeout=self.request_timeout, limits=limits)
        self.webhooks = WebhookSender(secret=self.settings.callback_secret,
                                      allow_private=self.settings.callback_allow_private)
        self._loops = [asyncio.create_task(self._stage_loop(s), name=f"stage-{s}")
                       for s in transitions.STAGES]
        self._loops.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))
        self._loops.append(asyncio.create_task(self._writer_loop(), name="writer"))

    async def stop(self) -> None:
        """Stop dispatching; answers already in are recorded, requests still in flight are
        abandoned (their tasks stay leased and are released by the next start-up)."""
        tasks: list[asyncio.Task[Any]] = [*self._loops, *self._callbacks.values()]
        tasks += [t for t in (self._report_pass, self._zip_pass) if t is not None]
        tasks += [t for s in transitions.STAGES for t in self.inflight[s]]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        with contextlib.suppress(Exception):
            while not self._answers.empty():
                await self._write_batch()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.webhooks is not None:
            await self.webhooks.aclose()
            self.webhooks = None

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(t.done() for t in self._loops)

    def wake(self) -> None:
        """New work may be claimable (a job started running, a task was requeued)."""
        for ev in self._wake.values():
            ev.set()

    # --- stage loops -------------------------------------------------------------------------
    async def _stage_loop(self, stage: Stage) -> None:
        inflight = self.inflight[stage]
        idle = self.idle_s
        while True:
            pause = self._paused_until[stage] - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            free = self.concurrency[stage] - self._inflight_items[stage]
            if free <= 0 or (inflight and free < self._low_water[stage]):
                # claim in batches: one transaction per quarter of the slots, not per answer
                await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._wake[stage].clear()
            try:
                claimed = await self.claim(stage, free)
            except Exception:
                log.exception("claim for %s failed", stage)
                claimed = []
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake[stage].wait(), idle)
                idle = self._next_idle(idle)
                continue
            idle = self.idle_s
            size = self.batch_size
            for i in range(0, len(claimed), size):
                chunk = claimed[i:i + size]
                t = asyncio.create_task(self._dispatch_chunk(stage, chunk))
                self._inflight_items[stage] += len(chunk)
                inflight.add(t)
                t.add_done_callback(functools.partial(self._done, stage, len(chunk)))

    def _next_idle(self, idle: float) -> float:
        """The next wait of a stage loop that found nothing to claim: twice the last, up to
        SCHEDULER_IDLE_BACKOFF × SCHEDULER_IDLE_S. Work this gateway creates wakes the loop at
        once (`wake`: a job's ingest ends, retries are requeued, leases reclaimed; a matting
        answer wakes the comparison loop), so the poll only covers work it is not told of
        (another gateway's job on a shared Postgres); an idle gateway no longer opens ten
        write transactions a second (issue 17, point 4)."""
        return min(2.0 * idle, self.idle_s * SCHEDULER_IDLE_BACKOFF)

    def _done(self, stage: Stage, n: int, t: asyncio.Task[None]) -> None:
        self.inflight[stage].discard(t)
        self._inflight_items[stage] -= n

    async def _dispatch_chunk(self, stage: Stage, chunk: list[transitions.Claimed]) -> None:
        """One plain call per task with STAGE_BATCH_SIZE 1, else one batch call."""
        if self.batch_size == 1:
            await self._dispatch(stage, chunk[0])
        else:
            await self._dispatch_batch(stage, chunk)

    async def claim(self, stage: Stage, n: int) -> list[transitions.Claimed]:
        async with self.db.write() as s:
            return await transitions.claim(s, stage, n, time.time(), self.lease_s,
                                           by=self.settings.gateway_name)

    def request_for(self, stage: Stage, c: transitions.Claimed) -> StageRequest[Any]:
        """One request per image, whatever the number of models (see `matting_request` and
        `comparison_request`)."""
        if stage is Stage.MATTING:
            return self.matting_request(c)
        if stage is Stage.COMPARISON:
            return self.comparison_request(c)
        assert_never(stage)

    def matting_request(self, c: transitions.Claimed) -> MattingRequest:
        """The matting worker runs each of `models` on the image (batched per model list) and
        writes every cut-out."""
        models = c.models or [self.settings.default_model]
        o = c.options
        return MattingRequest(
            task_id=c.id, job_id=c.job_id, input=c.input,
            output=self.storage.matting_rel(c.job_id, c.path, o.suffix),
            params=MattingParams(models=models, output=OutputMode(c.output), format=o.format,
                                 max_size=o.max_size, background=o.background, crop=o.crop),
        )

    def comparison_request(self, c: transitions.Claimed) -> ComparisonRequest:
        """The comparison worker gets every model's matte in `mattes` and renders one sheet
        row per model."""
        st = self.storage
        models = c.models or [self.settings.default_model]
        first = c.matting_output or st.matting_rel(c.job_id, c.path, c.options.suffix)
        # A cut-out shaped by output options is no full-size matte: the comparison reads the
        # `<x>.alpha.png` the matting worker kept beside it (`OutputOptions.keeps_matte`).
        alpha = c.options.keeps_matte
        return ComparisonRequest(
            task_id=c.id, job_id=c.job_id, input=c.input,
            output=st.compare_rel(c.job_id, c.path),
            params=ComparisonParams(
                mattes=[MatteRef(model=m, path=model_output_rel(first, m, i, alpha),
                                 confidence=c.confidence if i == 0 else None)
                        for i, m in enumerate(models)],
                gt=c.gt,
                metrics_output=st.metrics_rel(c.job_id, c.path),
            ),
        )

    async def _dispatch(self, stage: Stage, c: transitions.Claimed) -> None:
        assert self.client is not None
        req = self.request_for(stage, c)
        gauge = self.metrics.inflight.labels(stage)
        gauge.inc()
        t0 = time.time()
        rid = request_id_for(stage, c.job_id, c.id)
        with bind(rid, job_id=c.job_id, task_id=c.id, stage=stage.value):
            try:
                def call() -> Awaitable[Outcome]:
                    assert self.client is not None
                    return call_stage(self.client, self.urls[stage], stage, req, self.storage,
                                      self.request_timeout, self.settings.internal_token, rid)
                if isinstance(req, MattingRequest):  # the content-hash cache, matting only
                    out = await self.cache.matting(c, req, call)
                else:
                    out = await call()
                    # the zip's sizes of a completed task (issue 17, `output_sizes`)
                    await asyncio.to_thread(note_sizes, self.storage, [(c, out.result)])
            finally:
                gauge.dec()
            log.info("task %s %s call: %s in %.0f ms", c.id, stage,
                     "ok" if out.result is not None else out.error, (time.time() - t0) * 1000)
        if out.unavailable is not None:
            self._pause(stage, out.unavailable)
        elif out.result is not None:
            self._pause_streak[stage] = 0
        self._answers.put_nowait(_Answer(stage, c, req.output, out, t0))

    async def _dispatch_batch(self, stage: Stage, chunk: list[transitions.Claimed]) -> None:
        assert self.client is not None
        reqs = [self.request_for(stage, c) for c in chunk]
        gauge = self.metrics.inflight.labels(stage)
        gauge.inc(len(chunk))
        t0 = time.time()
        first = chunk[0]
        rid = request_id_for(stage, first.job_id, first.id)
        with bind(rid, job_id=first.job_id, task_id=first.id, stage=stage.value):
            def call_batch(batch: list[Any]) -> Awaitable[list[Outcome]]:
                assert self.client is not None
                return call_stage_batch(
                    self.client, self.batch_urls[stage], stage, batch, self.storage,
                    self.request_timeout, self.settings.internal_token, rid)

            def call_one(req: MattingRequest) -> Awaitable[Outcome]:
                assert self.client is not None
                return call_stage(self.client, self.urls[stage], stage, req, self.storage,
                                  self.request_timeout, self.settings.internal_token, rid)
            try:
                if stage is Stage.MATTING:  # the content-hash cache, matting only
                    mreqs = [r for r in reqs if isinstance(r, MattingRequest)]
                    outs = await self.cache.matting_batch(chunk, mreqs, call_batch, call_one)
                else:
                    outs = await call_batch(reqs)
                    # the zip's sizes of completed tasks (issue 17, `output_sizes`)
                    await asyncio.to_thread(note_sizes, self.storage,
                                            [(c, o.result) for c, o in zip(chunk, outs,
                                                                            strict=True)])
            finally:
                gauge.dec(len(chunk))
            ok = sum(o.result is not None for o in outs)
            log.info("tasks %s..%s %s batch call: %d of %d ok in %.0f ms", first.id,
                     chunk[-1].id, stage, ok, len(chunk), (time.time() - t0) * 1000)
        unavailable = [o.unavailable for o in outs if o.unavailable is not None]
        if unavailable:
            self._pause(stage, max(unavailable))
        elif ok:
            self._pause_streak[stage] = 0
        for c, req, out in zip(chunk, reqs, outs, strict=True):
            self._answers.put_nowait(_Answer(stage, c, req.output, out, t0))

    # --- recording answers ---------------------------------------------------------------
    async def _writer_loop(self) -> None:
        while True:
            first = await self._answers.get()
            try:
                await self._write_batch(first)
            except Exception:
                log.exception("recording answers failed; trying again shortly")
                await asyncio.sleep(self.maintenance_s)

    async def _write_batch(self, first: _Answer | None = None) -> None:
        batch = [first or self._answers.get_nowait()]
        while len(batch) < WRITE_BATCH and not self._answers.empty():
            batch.append(self._answers.get_nowait())
        try:
            async with self.db.write() as s:
                now = time.time()
                kinds = await self._apply_all(s, batch, now)
                await transitions.touch_jobs(s, (a.claimed.job_id for a in batch), now)
                finished = await transitions.finish_jobs(s, now, _ended_jobs(batch, kinds))
        except Exception:
            # E.g. SQLite out of disk: the answers are kept and written once it can. One
            # whose lease has run out meanwhile is left to `reclaim_expired`.
            now = time.time()
            for a in batch:
                if a.claimed.dispatched_at + self.lease_s > now:
                    self._answers.put_nowait(a)
            raise
        if finished:
            self.db.note_jobs_ended(f.job_id for f in finished)  # their streams end now
            self._maintenance_due.set()  # its webhook and report now, not at the next pass
        for f in finished:
            log.info("job %s finished: %s", f.job_id, f.state.value)
        late_jobs = set()
        for a, kind in zip(batch, kinds, strict=True):
            self._count(a, kind, now)
            if kind is Recorded.LATE:
                late_jobs.add(a.claimed.job_id)
        for job_id in late_jobs:
            await self._drop_if_gone(job_id)

    async def _apply_all(self, s: AsyncSession, batch: list[_Answer],
                         now: float) -> list[Recorded]:
        """Record a batch of answers: the successes of each stage in one go
        (`transitions.record_successes`), the rest one by one; what each did, in order."""
        kinds: list[Recorded | None] = [None] * len(batch)
        for stage in transitions.STAGES:
            idx = [i for i, a in enumerate(batch) if a.stage is stage
                   and a.outcome.unavailable is None and a.outcome.result is not None]
            done = [(batch[i].claimed, batch[i].outcome.result, batch[i].output) for i in idx]
            oks = await transitions.record_successes(
                s, stage, [(c, r, o) for c, r, o in done if r is not None], now)
            for i, ok in zip(idx, oks, strict=True):
                kinds[i] = Recorded.DONE if ok else Recorded.LATE
        out: list[Recorded] = []
        for a, kind in zip(batch, kinds, strict=True):
            out.append(kind if kind is not None else await self._apply(s, a, now))
        return out

    async def _apply(self, s: AsyncSession, a: _Answer, now: float) -> Recorded:
        """Record one answer; what it did to the task."""
        out, c = a.outcome, a.claimed
        if out.unavailable is not None:
            ok = await transitions.release(s, a.stage, c, now + max(out.unavailable, 0.0),
                                           out.error)
            return Recorded.RELEASED if ok else Recorded.LATE
        if out.result is not None:
            ok = await transitions.record_success(s, a.stage, c, out.result, a.output, now)
            return Recorded.DONE if ok else Recorded.LATE
        state = await transitions.record_failure(
            s, a.stage, c, out.error, retryable=out.retryable, now=now,
            max_retries=self.settings.max_retries,
            backoff_base=self.backoff_base, backoff_max=self.backoff_max,
        )
        if state is None:
            return Recorded.LATE
        return Recorded.FAILED if state == TaskState.PERMANENTLY_FAILED else Recorded.RETRY

    def _count(self, a: _Answer, kind: Recorded, now: float) -> None:
        m, stage = self.metrics, a.stage
        if kind is Recorded.DONE and a.outcome.result is not None:
            t = a.outcome.result.timings
            m.stage_seconds.labels(stage).observe(max(0.0, t.finished - t.started))
            m.roundtrip_seconds.labels(stage).observe(max(0.0, now - a.sent_at))
            if stage.next is not None:
                self._wake[stage.next].set()
        elif kind is Recorded.RELEASED:
            m.unavailable.labels(stage).inc()
        elif kind is Recorded.LATE:
            m.late_answers.labels(stage).inc()
        elif kind is Recorded.FAILED:
            m.permanent_failures.labels(stage).inc()
            log.warning("task %s failed for good in %s: %s", a.claimed.id, stage,
                        a.outcome.error)
        elif kind is Recorded.RETRY:
            m.retries.labels(stage).inc()
            log.info("task %s will be retried (%s): %s", a.claimed.id, stage, a.outcome.error)

    async def _drop_if_gone(self, job_id: str) -> None:
        """A late answer for a cancelled job has just written files that were already
        removed: remove them again. (For a re-leased task the file is the retry's too.)"""
        async with self.db.read() as s:
            job = await repo.get_job(s, job_id)
        if job is None or job.state == JobState.CANCELLED.value:
            await asyncio.to_thread(self.storage.remove_job, job_id)

    def _pause(self, stage: Stage, retry_after: float) -> None:
        # One step of backoff per round of probing, not per refused call: the 16 calls in
        # flight when a balancer dies would otherwise jump straight to the longest pause.
        if self._paused_until[stage] <= time.time():
            self._pause_streak[stage] += 1
        backoff = min(STAGE_PAUSE_MAX_S,
                      STAGE_PAUSE_BASE_S * 2 ** (self._pause_streak[stage] - 1))
        wait = min(STAGE_PAUSE_MAX_S, max(retry_after, backoff))
        self._paused_until[stage] = max(self._paused_until[stage], time.time() + wait)

    # --- maintenance -----------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        while True:
            self._maintenance_due.clear()
            try:
                await self.maintain_once()
                self._start_report_pass()
            except Exception:
                log.exception("maintenance pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._maintenance_due.wait(), self.maintenance_s)

    async def maintain_once(self) -> list[transitions.FinishedJob]:
        """One pass of the singleton chores this gateway holds (`gateway.db.locks`; all of
        them on SQLite): requeues, lease reclaims, job closing and the counters' fold, then
        webhooks. Another gateway of the same Postgres holding them does them instead."""
        chores = self.db.chores
        finished: list[transitions.FinishedJob] = []
        if await chores.holds(Chore.MAINTENANCE):
            now = time.time()
            async with self.db.write() as s:
                moved = await transitions.requeue_due(s, now)
                moved += await transitions.reclaim_expired(s, now, self.settings.max_retries)
                finished = await transitions.finish_jobs(s, now)
                await repo.compact_counts(s)
            self.db.note_jobs_ended(f.job_id for f in finished)
            moved += await self.release_dead_gateways()
            if moved:
                self.wake()
            for f in finished:
                log.info("job %s finished: %s", f.job_id, f.state.value)
        if self.on_maintenance is not None:
            await self.on_maintenance()
        if await chores.holds(Chore.WEBHOOKS):
            await self._fire_callbacks()
        await chores.holds(Chore.REPORTS)  # taken if free: `_start_report_pass` reads it
        return finished

    async def release_dead_gateways(self) -> int:
        """Postgres (under the maintenance chore): the leases of gateways that are gone go
        back to their queues now, not when they expire. A gateway holds its GATEWAY_ID's lock
        while it lives (`GatewayState.start`); a lease holder whose lock can be taken is
        dead. Its answers can never arrive; one that somehow did would be fenced out."""
        if not self.db.postgres:
            return 0
        async with self.db.read() as s:
            holders = await transitions.lease_holders(s)
        released = 0
        for holder in holders:
            if holder == self.settings.gateway_name:
                continue
            key = lock_key(GATEWAY_LOCK_SPACE, holder)
            if not await self.db.chores.take(key):
                continue  # alive
            try:
                async with self.db.write() as s:
                    n = await transitions.release_dispatched(s, by=holder)
                if n:
                    log.warning("gateway %s is gone: %d of its leases released", holder, n)
                released += n
            finally:
                await self.db.chores.give(key)
        return released

    def _start_report_pass(self) -> None:
        """Write missing report files in the background (one pass at a time): a big job's
        report takes a while, and closing jobs, requeues and webhooks must not wait for it.
        Then the missing stored zips, in a pass of their own (ZIP_STORE)."""
        if Chore.REPORTS not in self.db.chores.held:  # (asked for by `maintain_once`)
            return
        if self._report_pass is None or self._report_pass.done():
            self._report_pass = asyncio.create_task(self.reports.write_missing(),
                                                    name="report-pass")
            self._report_pass.add_done_callback(_log_failure)
        if self.zips is not None and (self._zip_pass is None or self._zip_pass.done()):
            self._zip_pass = asyncio.create_task(self.zips.store_missing(self.reports),
                                                 name="zip-pass")
            self._zip_pass.add_done_callback(_log_failure)

    async def _fire_callbacks(self) -> None:
        async with self.db.read() as s:
            jobs = await repo.jobs_needing_callback(s, self._callbacks)
            payloads: list[tuple[str, str, int, dict[str, Any]]] = []
            for job in jobs:
                counts = await repo.job_counts(s, job.id)
                payloads.append((job.id, job.callback_url or "", job.callback_attempts or 0,
                                 job_summary(job, counts, time.time())))
        for job_id, url, made, payload in payloads:
            t = asyncio.create_task(self._callback(job_id, url, made, payload))
            self._callbacks[job_id] = t

    async def _callback(self, job_id: str, url: str, made: int, payload: dict[str, Any]) -> None:
        """Up to CALLBACK_MAX_ATTEMPTS attempts in all (`made` were made before, perhaps by an
        earlier process), each counted in the database before it is sent; then the job's
        webhook is done, delivered or failed, and never fired again."""
        webhooks = self.webhooks
        assert webhooks is not None
        most = self.settings.callback_max_attempts
        error = f"gave up after {made} attempts"
        try:
            while made < most:
                async with self.db.write() as s:
                    made = await repo.count_callback_attempt(s, job_id)
                attempt = await webhooks.post(url, payload)
                if attempt.delivered:
                    async with self.db.write() as s:
                        await repo.mark_callback_done(s, job_id)
                    return
                error = attempt.error or "failed"
                log.warning("callback for job %s, attempt %d of %d: %s", job_id, made, most,
                            error)
                if attempt.final:
                    break
                if made < most:
                    await asyncio.sleep(self.callback_backoff * 2 ** (made - 1))
            log.warning("callback for job %s to %s failed for good: %s", job_id, url, error)
            async with self.db.write() as s:
                await repo.mark_callback_done(s, job_id, error)
        except Exception:
            # The database refused a write: the next maintenance pass picks the job up again
            # with the attempts counted so far, so this cannot loop for ever either.
            log.exception("callback bookkeeping for job %s failed", job_id)
        finally:
            self._callbacks.pop(job_id, None)
