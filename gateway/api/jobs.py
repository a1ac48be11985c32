"""Progress and job management: `/status/{id}`, `/jobs`, `/jobs/{id}/tasks`,
`DELETE /jobs/{id}`, `/models`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from gateway.api.deps import GW, ReadDB, SettingsDep, job_or_404
from gateway.db import repo
from gateway.db.tables import Task
from gateway.results.summary import job_summary
from matting_worker.engines.registry import list_models
from shared.stages import Stage
from shared.states import FINAL_JOB_STATES, JobState, TaskState
from shared.timing import STATUS_DETAIL_TTL_S

__all__ = ["router", "task_view"]

router = APIRouter(tags=["jobs"])

Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


@router.get("/status/{job_id}")
async def job_status(job_id: str, db: ReadDB, gw: GW) -> dict[str, Any]:
    """Counts per task state, progress (%), throughput (images/s since the first dispatch),
    ETA, and where the time goes per stage (`stages`: mean worker time and wait, per worker;
    refreshed every few seconds while the job runs, since it reads all of the job's rows)."""
    now = time.time()
    job = await job_or_404(db, job_id)
    counts = await repo.job_counts(db, job_id)
    out = job_summary(job, counts, now)
    cached = gw.detail_cache.get(job_id)
    final = JobState(job.state) in FINAL_JOB_STATES
    if cached and cached[1] == job.state and (final or cached[0] > now):
        stages = cached[2]
    else:
        stages = await repo.stage_stats(db, job_id)
        gw.detail_cache[job_id] = (now + STATUS_DETAIL_TTL_S, job.state, stages)
        if len(gw.detail_cache) > 4096:
            gw.detail_cache.clear()
    out["stages"] = stages
    return out


@router.get("/jobs")
async def jobs(db: ReadDB, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    """All jobs, newest first, each with the `/status` summary."""
    now = time.time()
    rows = await repo.list_jobs(db, limit, offset)
    counts = await repo.job_counts_many(db, [j.id for j in rows])
    return {
        "total": await repo.count_jobs(db),
        "limit": limit,
        "offset": offset,
        "jobs": [job_summary(j, counts[j.id], now) for j in rows],
    }


def task_view(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "path": t.path,
        "state": t.state,
        "error": t.error,
        "retry_count": t.retry_count,
        "failed_stage": t.failed_stage,
        "next_attempt_at": t.next_attempt_at if t.state == TaskState.FAILED.value else None,
        "matting_output": t.matting_output,
        "compare_output": t.compare_output,
        "metrics": t.metrics,
        "queued_at": t.queued_at,
        Stage.MATTING: {
            "dispatched_at": t.matting_dispatched_at,
            "started_at": t.matting_started_at,
            "finished_at": t.matting_finished_at,
            "worker": t.matting_worker,
            "batch_size": t.matting_batch_size,
        },
        Stage.COMPARISON: {
            "dispatched_at": t.comparison_dispatched_at,
            "started_at": t.comparison_started_at,
            "finished_at": t.comparison_finished_at,
            "worker": t.comparison_worker,
        },
        "completed_at": t.completed_at,
    }


@router.get("/jobs/{job_id}/tasks")
async def job_tasks(
    job_id: str,
    db: ReadDB,
    state: Annotated[str | None, Query(description="only tasks in this state")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """One page of a job's tasks (by id), optionally only those in one state."""
    if state is not None and state not in {s.value for s in TaskState}:
        raise HTTPException(
            400,
            detail=f"unknown task state {state!r}; use one of: "
            + ", ".join(s.value for s in TaskState),
        )
    await job_or_404(db, job_id)
    rows = await repo.list_tasks(db, job_id, state, limit, offset)
    return {
        "job_id": job_id,
        "state": state,
        "total": await repo.count_tasks(db, job_id, state),
        "limit": limit,
        "offset": offset,
        "tasks": [task_view(t) for t in rows],
    }


@router.delete("/jobs/{job_id}")
async def cancel_job(job_id: str, gw: GW) -> dict[str, Any]:
    """Cancel a job: nothing more of it is dispatched, late answers are ignored, and its
    files (upload, cut-outs, sheets) are removed. A job that already finished is removed
    the same way; its row stays, in state `cancelled`, so its id keeps answering."""
    async with gw.read_sessions() as s:
        await job_or_404(s, job_id)
    await gw.cancel_ingest(job_id)
    now = time.time()
    async with gw.scheduler.write() as s:
        await repo.set_job(
            s, job_id, state=JobState.CANCELLED.value, finished_at=now, updated_at=now
        )
    await asyncio.to_thread(gw.storage.remove_job, job_id)
    gw.detail_cache.pop(job_id, None)
    async with gw.read_sessions() as s:
        job = await job_or_404(s, job_id)
        counts = await repo.job_counts(s, job_id)
    return job_summary(job, counts, time.time())


@router.get("/models")
async def models(settings: SettingsDep) -> dict[str, Any]:
    """The engines a job may name in `model=`: built-ins and model files in MODELS_DIR."""
    found = await asyncio.to_thread(list_models, settings.models_dir)
    return {"default": settings.default_model, "models": [asdict(m) for m in found]}

