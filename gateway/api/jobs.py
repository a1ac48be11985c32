"""Progress and job management: `/status/{id}`, `/jobs`, `/jobs/{id}/tasks`,
`DELETE /jobs/{id}`, `/models`."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy.orm import Session

from gateway.api.deps import (
    GW,
    After,
    Caller,
    CallerDep,
    Limit,
    Offset,
    ReadDB,
    SettingsDep,
    TaskStateFilter,
    found_or_404,
    job_or_404,
)
from gateway.api.docs import errors
from gateway.db import repo
from gateway.db.tables import Job, Task
from gateway.pipeline.model_reload import reload_models
from gateway.results.summary import summarize
from gateway.state import DETAIL_CACHE_MAX_JOBS, GatewayState
from shared.errors import StageFailure
from shared.responses import (
    JobList,
    JobStages,
    JobStatus,
    JobSummary,
    ModelList,
    ModelReloadReport,
    TaskComparison,
    TaskMatting,
    TaskPage,
    TaskView,
)
from shared.schemas import ModelReload
from shared.states import FINAL_JOB_STATES, JobState, TaskState
from shared.timing import STATUS_DETAIL_SCAN_SHARE, STATUS_DETAIL_TTL_S
from shared.zoo import all_models, load_zoo

__all__ = ["read_status", "router", "task_view"]

router = APIRouter(tags=["jobs"])
log = logging.getLogger("gateway.api.jobs")



@router.get("/status/{job_id}", response_model=JobStatus, responses=errors(404))
async def job_status(job_id: str, gw: GW, caller: CallerDep) -> JobStatus:
    """Counts per task state, progress (%), throughput (images/s since the first dispatch),
    ETA, and where the time goes per stage (`stages`: mean worker time and wait, per worker;
    refreshed every few seconds while the job runs, since it reads all of the job's rows)."""
    return await read_status(gw, job_id, caller)


def _status_rows(s: Session, job_id: str, owner: str | None
                 ) -> tuple[Job | None, dict[str, int]]:
    job = repo.job_sync(s, job_id, owner)
    return job, (repo.job_counts_sync(s, job_id) if job is not None else {})


async def read_status(gw: GatewayState, job_id: str, caller: Caller) -> JobStatus:
    """`/status`'s answer; also each event of the live progress stream (`gateway.api.events`).
    The job and its counters are one snapshot (`Database.snapshot`: one wake-up of the event
    loop); the stage details come from their cache, refreshed off the request."""
    now = time.time()
    found, counts = await gw.db.snapshot(
        functools.partial(_status_rows, job_id=job_id, owner=caller.owner))
    job = found_or_404(found, job_id)
    summary = summarize(job, counts, now)
    cached = gw.detail_cache.get(job_id)
    final = JobState(job.state) in FINAL_JOB_STATES
    if cached and cached[1] == job.state and (final or cached[0] > now):
        stages = cached[2]
    elif cached and cached[1] == job.state:
        # stale while the job runs: answer from the cache, recompute in the background
        stages = cached[2]
        if job_id not in gw.detail_refresh:
            t = asyncio.create_task(_refresh_details(gw, job_id, job.state))
            gw.detail_refresh[job_id] = t
            t.add_done_callback(lambda _t: gw.detail_refresh.pop(job_id, None))
    else:
        stages = await _load_details(gw, job_id, job.state)
    return JobStatus(**summary.model_dump(), stages=JobStages.model_validate(stages))


async def _load_details(gw: GatewayState, job_id: str, state: str) -> dict[str, Any]:
    """`repo.stage_stats` of the job (a scan of its rows), cached by `_cache_details` for as
    long as its scan took allows."""
    t0 = time.perf_counter()
    async with gw.db.read() as s:
        stages = await repo.stage_stats(s, job_id)
    _cache_details(gw, job_id, state, stages, time.perf_counter() - t0)
    return stages


def _cache_details(gw: GatewayState, job_id: str, state: str, stages: dict[str, Any],
                   took: float) -> None:
    """`stages` kept for STATUS_DETAIL_TTL_S, or for `took` (their scan's seconds) ÷
    STATUS_DETAIL_SCAN_SHARE when longer: a big job's scan never takes more than that share
    of the time, however often it is watched."""
    keep = max(STATUS_DETAIL_TTL_S, took / STATUS_DETAIL_SCAN_SHARE)
    gw.detail_cache[job_id] = (time.time() + keep, state, stages)
    if len(gw.detail_cache) > DETAIL_CACHE_MAX_JOBS:
        gw.detail_cache.clear()


async def _refresh_details(gw: GatewayState, job_id: str, state: str) -> None:
    """`stage_stats` reads every row of the job (means over its tasks): for a 100 000-image
    job that is a scan no `/status` poll should wait for, so it runs here, off the request."""
    try:
        await _load_details(gw, job_id, state)
    except Exception:
        log.exception("stage details of job %s", job_id)


@router.get("/jobs", response_model=JobList)
async def jobs(db: ReadDB, caller: CallerDep, limit: Limit = 50, offset: Offset = 0) -> JobList:
    """The caller's jobs (every job for ADMIN_KEY, or without keys), newest first, each with
    the `/status` summary."""
    now = time.time()
    rows = await repo.list_jobs(db, limit, offset, owner=caller.owner)
    counts = await repo.job_counts_many(db, [j.id for j in rows])
    return JobList(
        total=await repo.count_jobs(db, owner=caller.owner),
        limit=limit,
        offset=offset,
        jobs=[summarize(j, counts[j.id], now) for j in rows],
    )


def task_view(t: Task) -> TaskView:
    return TaskView(
        id=t.id,
        path=t.path,
        state=t.state,
        error=t.error,
        retry_count=t.retry_count,
        failed_stage=t.failed_stage,
        next_attempt_at=t.next_attempt_at if t.state == TaskState.FAILED.value else None,
        matting_output=t.matting_output,
        compare_output=t.compare_output,
        metrics=t.metrics,
        queued_at=t.queued_at,
        matting=TaskMatting(
            dispatched_at=t.matting_dispatched_at,
            started_at=t.matting_started_at,
            finished_at=t.matting_finished_at,
            worker=t.matting_worker,
            batch_size=t.matting_batch_size,
        ),
        comparison=TaskComparison(
            dispatched_at=t.comparison_dispatched_at,
            started_at=t.comparison_started_at,
            finished_at=t.comparison_finished_at,
            worker=t.comparison_worker,
        ),
        completed_at=t.completed_at,
    )


@router.get("/jobs/{job_id}/tasks", response_model=TaskPage, responses=errors(400, 404))
async def job_tasks(
    job_id: str,
    gw: GW,
    caller: CallerDep,
    state: TaskStateFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
    after: After = None,
) -> TaskPage:
    """One page of a job's tasks (by id), optionally only those in one state. Page with
    `after` (the previous page's `next_after`) for constant time at any depth; `offset` still
    works but costs the rows it skips."""
    job, rows, total = await gw.db.snapshot(functools.partial(  # one wake-up of the loop
        repo.task_page_sync, job_id=job_id, owner=caller.owner, state=state, limit=limit,
        offset=offset, after=after))
    found_or_404(job, job_id)
    return TaskPage(
        job_id=job_id,
        state=state,
        total=total,
        limit=limit,
        offset=offset,
        after=after,
        tasks=[task_view(t) for t in rows],
        next_after=rows[-1].id if len(rows) == limit else None,
    )


@router.delete("/jobs/{job_id}", response_model=JobSummary, responses=errors(404))
async def cancel_job(job_id: str, gw: GW, caller: CallerDep) -> JobSummary:
    """Cancel a job: nothing more of it is dispatched, late answers are ignored, and its
    files (upload, cut-outs, sheets) are removed. A job that already finished is removed
    the same way; its row stays, in state `cancelled`, so its id keeps answering. Another
    tenant's job is a 404 and is not touched (ADMIN_KEY may cancel any)."""
    async with gw.db.read() as s:
        await job_or_404(s, job_id, caller)
    await gw.cancel_ingest(job_id)
    now = time.time()
    async with gw.db.write() as s:
        await repo.set_job(
            s, job_id, state=JobState.CANCELLED.value, finished_at=now, updated_at=now
        )
    gw.db.note_jobs_ended([job_id])  # its live progress streams send `end` now
    await asyncio.to_thread(gw.storage.remove_job, job_id)
    gw.detail_cache.pop(job_id, None)
    async with gw.db.read() as s:
        job = await job_or_404(s, job_id, caller)
        counts = await repo.job_counts(s, job_id)
    return summarize(job, counts, time.time())


@router.get("/models", response_model=ModelList)
async def models(settings: SettingsDep) -> ModelList:
    """The engines a job may name in `model=`: built-ins, model files in MODELS_DIR, and the
    zoo models a worker downloads on first use (`present: false`)."""
    found = await asyncio.to_thread(
        all_models, settings.models_dir, load_zoo(settings.model_catalogue))
    return ModelList(default=settings.default_model, models=found)


@router.post("/models/reload", response_model=ModelReloadReport, responses=errors(403, 502))
async def models_reload(settings: SettingsDep, caller: CallerDep,
                        body: ModelReload | None = None) -> ModelReloadReport:
    """ADMIN_KEY only: every matting worker loads the named models (default: every one it has
    loaded) again from their files, now; a file that no longer loads is listed per worker.
    (A changed file is also picked up by itself on its next use.)"""
    if not caller.is_admin:
        raise HTTPException(403, detail="reloading models needs the ADMIN_KEY")
    try:
        return await reload_models(settings, body.models if body is not None else None)
    except StageFailure as exc:
        raise HTTPException(502, detail=str(exc)) from None
