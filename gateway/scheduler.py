"""The stage scheduler: leases tasks from the DB, calls the two stage APIs, records answers.

One loop per stage keeps at most `<stage>_concurrency` requests in flight; a maintenance loop
requeues due retries, reclaims expired leases, closes finished jobs and fires their webhooks.

What counts as a failed attempt: an error answer, a timeout, a broken connection mid-request,
a success whose output file is missing. What does not: a 503 (the balancer is saturated or has
no healthy worker) or a refused connection (the API is down or restarting). Those give the
lease back and pause the stage briefly, so an outage of the matting API delays a job of
100 000 images instead of failing all of them for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.schemas import StageError, StageRequest, StageResult
from shared.settings import Settings
from shared.states import JobState, TaskState
from shared.storage import PathOutsideDataDir, Storage
from shared.timing import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    LEASE_S,
    MAINTENANCE_INTERVAL_S,
    SCHEDULER_IDLE_S,
    STAGE_PAUSE_MAX_S,
    STAGE_REQUEST_TIMEOUT_S,
)

from . import repo
from .callbacks import send_callback
from .metrics import GatewayMetrics
from .summary import job_summary

__all__ = ["Scheduler"]

log = logging.getLogger("gateway.scheduler")


@dataclass
class _Outcome:
    result: StageResult | None = None
    error: str = ""
    retryable: bool = True
    unavailable: float | None = None
    """Seconds to wait (Retry-After) when the stage refused or was unreachable."""


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        storage: Storage,
        metrics: GatewayMetrics | None = None,
        *,
        lease_s: float = LEASE_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        idle_s: float = SCHEDULER_IDLE_S,
        maintenance_s: float = MAINTENANCE_INTERVAL_S,
        request_timeout: float = STAGE_REQUEST_TIMEOUT_S,
        callback_backoff: float = BACKOFF_BASE_S,
    ) -> None:
        self.settings, self.sessions, self.storage = settings, sessions, storage
        self.metrics = metrics or GatewayMetrics()
        self.lease_s, self.backoff_base, self.backoff_max = lease_s, backoff_base, backoff_max
        self.idle_s, self.maintenance_s = idle_s, maintenance_s
        self.request_timeout, self.callback_backoff = request_timeout, callback_backoff
        self.concurrency = {
            "matting": max(1, settings.matting_concurrency),
            "comparison": max(1, settings.comparison_concurrency),
        }
        self.urls = {
            "matting": settings.matting_api_url.rstrip("/") + "/matting",
            "comparison": settings.comparison_api_url.rstrip("/") + "/compare",
        }
        self.inflight: dict[str, set[asyncio.Task[None]]] = {s: set() for s in repo.STAGES}
        self._wake = {s: asyncio.Event() for s in repo.STAGES}
        self._paused_until = {s: 0.0 for s in repo.STAGES}
        self._pause_streak = {s: 0 for s in repo.STAGES}
        self._loops: list[asyncio.Task[None]] = []
        self._callbacks: dict[str, asyncio.Task[None]] = {}
        self.client: httpx.AsyncClient | None = None

    # --- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        limits = httpx.Limits(max_connections=sum(self.concurrency.values()) + 8)
        self.client = httpx.AsyncClient(timeout=self.request_timeout, limits=limits)
        self._loops = [asyncio.create_task(self._stage_loop(s), name=f"stage-{s}")
                       for s in repo.STAGES]
        self._loops.append(asyncio.create_task(self._maintenance_loop(), name="maintenance"))

    async def stop(self) -> None:
        """Stop dispatching; requests in flight are abandoned (their tasks stay leased and are
        released by the next start-up)."""
        tasks = [*self._loops, *self._callbacks.values()]
        tasks += [t for s in repo.STAGES for t in self.inflight[s]]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    @property
    def running(self) -> bool:
        return bool(self._loops) and not any(t.done() for t in self._loops)

    def wake(self) -> None:
        """New work may be claimable (a job started running, a task was requeued)."""
        for ev in self._wake.values():
            ev.set()

    # --- stage loops -------------------------------------------------------------------------
    async def _stage_loop(self, stage: str) -> None:
        inflight = self.inflight[stage]
        while True:
            pause = self._paused_until[stage] - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            free = self.concurrency[stage] - len(inflight)
            if free <= 0:
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
                    await asyncio.wait_for(self._wake[stage].wait(), self.idle_s)
                continue
            for c in claimed:
                t = asyncio.create_task(self._dispatch(stage, c))
                inflight.add(t)
                t.add_done_callback(inflight.discard)

    async def claim(self, stage: str, n: int) -> list[repo.Claimed]:
        async with self.sessions.begin() as s:
            return await repo.claim(s, stage, n, time.time(), self.lease_s)

    def request_for(self, stage: str, c: repo.Claimed) -> StageRequest:
        st = self.storage
        if stage == "matting":
            return StageRequest(
                task_id=c.id, job_id=c.job_id, input=c.input,
                output=st.matting_rel(c.job_id, c.path),
                params={"model": c.model, "output": c.output},
            )
        return StageRequest(
            task_id=c.id, job_id=c.job_id, input=c.input,
            output=st.compare_rel(c.job_id, c.path),
            params={
                "matte": c.matting_output or st.matting_rel(c.job_id, c.path),
                "gt": c.gt,
                "model": c.model,
                "metrics_output": st.metrics_rel(c.job_id, c.path),
            },
        )

    async def _dispatch(self, stage: str, c: repo.Claimed) -> None:
        req = self.request_for(stage, c)
        gauge = self.metrics.inflight.labels(stage)
        gauge.inc()
        t0 = time.time()
        try:
            out = await self._call(stage, req)
        finally:
            gauge.dec()
        try:
            await self._record(stage, c, req, out, t0)
        except Exception:
            log.exception("recording task %s (%s) failed; its lease will expire", c.id, stage)

    async def _call(self, stage: str, req: StageRequest) -> _Outcome:
        assert self.client is not None
        try:
            r = await self.client.post(self.urls[stage], json=req.model_dump(mode="json"))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return _Outcome(error=f"{stage} API unreachable: {exc!r}", unavailable=0.0)
        except httpx.TimeoutException:
            return _Outcome(error=f"{stage} stage timed out after {self.request_timeout:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(error=f"{stage} request failed: {exc!r}")
        if r.status_code == 200:
            try:
                result = StageResult.model_validate_json(r.content)
            except ValidationError as exc:
                return _Outcome(error=f"{stage} answer malformed: {exc.errors()[:1]}")
            try:
                present = self.storage.resolve(req.output).is_file()
            except PathOutsideDataDir:
                present = False
            if not present:
                return _Outcome(error=f"{stage} reported success but {req.output} is missing")
            return _Outcome(result=result)
        if r.status_code in (429, 503):
            try:
                wait = float(r.headers.get("retry-after", "0"))
            except ValueError:
                wait = 0.0
            return _Outcome(error=f"{stage} API busy ({r.status_code})", unavailable=wait)
        try:
            err = StageError.model_validate_json(r.content)
            detail, retryable = err.detail, err.retryable
        except ValidationError:
            detail = f"HTTP {r.status_code}: {r.text[:500]}"
            retryable = r.status_code >= 500 or r.status_code == 408
        return _Outcome(error=f"{stage}: {detail}", retryable=retryable)

    async def _record(
        self, stage: str, c: repo.Claimed, req: StageRequest, out: _Outcome, t0: float
    ) -> None:
        now = time.time()
        m = self.metrics
        if out.unavailable is not None:
            self._pause(stage, out.unavailable)
            m.unavailable.labels(stage).inc()
            async with self.sessions.begin() as s:
                await repo.release(s, stage, c, now + max(out.unavailable, 0.0))
            return
        if out.result is not None:
            self._pause_streak[stage] = 0
            async with self.sessions.begin() as s:
                ok = await repo.record_success(s, stage, c, out.result, req.output, now)
            if not ok:
                m.late_answers.labels(stage).inc()
                await self._drop_if_gone(c.job_id)
                return
            t = out.result.timings
            m.stage_seconds.labels(stage).observe(max(0.0, t.finished - t.started))
            m.roundtrip_seconds.labels(stage).observe(max(0.0, now - t0))
            if stage == "matting":
                self._wake["comparison"].set()
            return
        async with self.sessions.begin() as s:
            state = await repo.record_failure(
                s, stage, c, out.error, retryable=out.retryable, now=now,
                max_retries=self.settings.max_retries,
                backoff_base=self.backoff_base, backoff_max=self.backoff_max,
            )
        if state is None:
            m.late_answers.labels(stage).inc()
        elif state == TaskState.PERMANENTLY_FAILED:
            m.permanent_failures.labels(stage).inc()
            log.warning("task %s failed for good in %s: %s", c.id, stage, out.error)
        else:
            m.retries.labels(stage).inc()
            log.info("task %s will be retried (%s): %s", c.id, stage, out.error)

    async def _drop_if_gone(self, job_id: str) -> None:
        """A late answer for a cancelled job has just written files that were already
        removed: remove them again. (For a re-leased task the file is the retry's too.)"""
        async with self.sessions() as s:
            job = await repo.get_job(s, job_id)
        if job is None or job.state == JobState.CANCELLED.value:
            await asyncio.to_thread(self.storage.remove_job, job_id)

    def _pause(self, stage: str, retry_after: float) -> None:
        self._pause_streak[stage] += 1
        backoff = min(STAGE_PAUSE_MAX_S, 0.25 * 2 ** (self._pause_streak[stage] - 1))
        wait = min(STAGE_PAUSE_MAX_S, max(retry_after, backoff))
        self._paused_until[stage] = max(self._paused_until[stage], time.time() + wait)

    # --- maintenance -----------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        while True:
            try:
                await self.maintain_once()
            except Exception:
                log.exception("maintenance pass failed")
            await asyncio.sleep(self.maintenance_s)

    async def maintain_once(self) -> list[repo.FinishedJob]:
        now = time.time()
        async with self.sessions.begin() as s:
            moved = await repo.requeue_due(s, now)
            moved += await repo.reclaim_expired(s, now, self.settings.max_retries)
            finished = await repo.finish_jobs(s, now)
        if moved:
            self.wake()
        for f in finished:
            log.info("job %s finished: %s", f.job_id, f.state.value)
        await self._fire_callbacks()
        return finished

    async def _fire_callbacks(self) -> None:
        async with self.sessions() as s:
            jobs = await repo.jobs_needing_callback(s, self._callbacks)
            payloads: list[tuple[str, str, dict[str, Any]]] = []
            for job in jobs:
                counts = await repo.job_counts(s, job.id)
                payloads.append((job.id, job.callback_url or "", job_summary(job, counts,
                                                                            time.time())))
        for job_id, url, payload in payloads:
            t = asyncio.create_task(self._callback(job_id, url, payload))
            self._callbacks[job_id] = t

    async def _callback(self, job_id: str, url: str, payload: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            ok = await send_callback(self.client, url, payload, self.settings.callback_secret,
                                     backoff_base=self.callback_backoff)
            if not ok:
                log.warning("callback for job %s to %s gave up", job_id, url)
            async with self.sessions.begin() as s:
                await repo.mark_callback_done(s, job_id)
        finally:
            self._callbacks.pop(job_id, None)
