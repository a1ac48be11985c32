"""Every query and transition of the task database, in short transactions.

The callers open the session and its transaction (`async with sessions.begin() as s:`); on
SQLite each write transaction is `BEGIN IMMEDIATE`, so a claim's read-then-update is atomic
against any other writer. Stage answers are fenced by the dispatch timestamp the claim wrote:
an answer for an attempt that has since been re-leased matches no row and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import Job, Task
from shared.schemas import StageResult
from shared.states import FINAL_JOB_STATES, FINAL_TASK_STATES, JobState, TaskState

__all__ = [
    "STAGES",
    "Claimed",
    "FinishedJob",
    "backoff_s",
    "claim",
    "count_jobs",
    "count_tasks",
    "create_job",
    "delete_job",
    "finish_jobs",
    "get_job",
    "global_counts",
    "job_counts",
    "job_counts_many",
    "jobs_in_state",
    "jobs_needing_callback",
    "list_jobs",
    "list_tasks",
    "mark_callback_done",
    "reclaim_expired",
    "record_failure",
    "record_success",
    "release",
    "release_dispatched",
    "report_rows",
    "requeue_due",
    "set_job",
    "stage_stats",
]

STAGES = ("matting", "comparison")
# stage → (queue state it is claimed from, dispatched state, state after success)
_FLOW: dict[str, tuple[TaskState, TaskState, TaskState]] = {
    "matting": (TaskState.PENDING, TaskState.DISPATCHED_MATTING, TaskState.MATTING_DONE),
    "comparison": (
        TaskState.MATTING_DONE,
        TaskState.DISPATCHED_COMPARISON,
        TaskState.COMPLETED,
    ),
}
_UNFINISHED = [s.value for s in TaskState if s not in FINAL_TASK_STATES]


def backoff_s(retry_count: int, base: float, cap: float) -> float:
    """Delay before attempt `retry_count + 1`: base, 2·base, 4·base … capped."""
    return float(min(cap, base * 2 ** max(0, retry_count - 1)))


def _dispatched_col(stage: str) -> Any:
    return Task.matting_dispatched_at if stage == "matting" else Task.comparison_dispatched_at


# --- jobs ----------------------------------------------------------------------------------
async def create_job(s: AsyncSession, job_id: str, **fields: Any) -> Job:
    job = Job(id=job_id, **fields)
    s.add(job)
    await s.flush()
    return job


async def get_job(s: AsyncSession, job_id: str) -> Job | None:
    return await s.get(Job, job_id)


async def set_job(
    s: AsyncSession, job_id: str, *, only_if: Iterable[str] | None = None, **fields: Any
) -> bool:
    """Update a job's columns; with `only_if`, only while it is in one of those states."""
    q = update(Job).where(Job.id == job_id)
    if only_if is not None:
        q = q.where(Job.state.in_(list(only_if)))
    res = await s.execute(q.values(**fields))
    return bool(getattr(res, "rowcount", 0))


async def delete_job(s: AsyncSession, job_id: str, *, keep_job: bool = False) -> None:
    """Remove a job's tasks, and the job row itself unless `keep_job`."""
    await s.execute(delete(Task).where(Task.job_id == job_id))
    if not keep_job:
        await s.execute(delete(Job).where(Job.id == job_id))


async def jobs_in_state(s: AsyncSession, state: JobState) -> list[str]:
    rows = await s.execute(select(Job.id).where(Job.state == state.value))
    return list(rows.scalars())


async def list_jobs(s: AsyncSession, limit: int, offset: int) -> list[Job]:
    q = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    return list((await s.execute(q)).scalars())


async def count_jobs(s: AsyncSession) -> int:
    return int((await s.execute(select(func.count()).select_from(Job))).scalar_one())


async def job_counts(s: AsyncSession, job_id: str) -> dict[str, int]:
    q = select(Task.state, func.count()).where(Task.job_id == job_id).group_by(Task.state)
    return {state: int(n) for state, n in (await s.execute(q)).all()}


async def job_counts_many(s: AsyncSession, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {j: {} for j in job_ids}
    if job_ids:
        q = (
            select(Task.job_id, Task.state, func.count())
            .where(Task.job_id.in_(list(job_ids)))
            .group_by(Task.job_id, Task.state)
        )
        for job_id, state, n in (await s.execute(q)).all():
            out[job_id][state] = int(n)
    return out


async def global_counts(s: AsyncSession) -> tuple[dict[str, int], dict[str, int]]:
    """(tasks by state, jobs by state) over the whole database, for /metrics."""
    tq = select(Task.state, func.count()).group_by(Task.state)
    jq = select(Job.state, func.count()).group_by(Job.state)
    tasks = {st: int(n) for st, n in (await s.execute(tq)).all()}
    jobs = {st: int(n) for st, n in (await s.execute(jq)).all()}
    return tasks, jobs


async def stage_stats(s: AsyncSession, job_id: str) -> dict[str, Any]:
    """Where the time goes: mean worker time and mean wait (dispatch → worker start) per stage,
    and how many images each worker did."""
    out: dict[str, Any] = {}
    for stage in STAGES:
        disp, start, fin, worker = (
            getattr(Task, f"{stage}_dispatched_at"),
            getattr(Task, f"{stage}_started_at"),
            getattr(Task, f"{stage}_finished_at"),
            getattr(Task, f"{stage}_worker"),
        )
        q = (
            select(worker, func.count(), func.avg(fin - start), func.avg(start - disp))
            .where(Task.job_id == job_id, fin.is_not(None))
            .group_by(worker)
        )
        done, work_sum, wait_sum, workers = 0, 0.0, 0.0, {}
        for w, n, work, wait in (await s.execute(q)).all():
            done += int(n)
            work_sum += float(work or 0.0) * n
            wait_sum += float(wait or 0.0) * n
            workers[w or "?"] = int(n)
        out[stage] = {
            "done": done,
            "mean_s": round(work_sum / done, 4) if done else None,
            "mean_wait_s": round(wait_sum / done, 4) if done else None,
            "workers": workers,
        }
    return out


async def list_tasks(
    s: AsyncSession, job_id: str, state: str | None, limit: int, offset: int
) -> list[Task]:
    q = select(Task).where(Task.job_id == job_id)
    if state:
        q = q.where(Task.state == state)
    q = q.order_by(Task.id).limit(limit).offset(offset)
    return list((await s.execute(q)).scalars())


async def count_tasks(s: AsyncSession, job_id: str, state: str | None) -> int:
    q = select(func.count()).select_from(Task).where(Task.job_id == job_id)
    if state:
        q = q.where(Task.state == state)
    return int((await s.execute(q)).scalar_one())


async def report_rows(s: AsyncSession, job_id: str) -> list[Task]:
    q = select(Task).where(Task.job_id == job_id).order_by(Task.path)
    return list((await s.execute(q)).scalars())


# --- the scheduler's transitions ----------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    """One leased task, with everything needed to build its stage request."""

    id: int
    job_id: str
    path: str
    input: str
    gt: str | None
    matting_output: str | None
    dispatched_at: float
    """The fence: the answer is recorded only while the row still carries this value."""
    model: str
    output: str


async def claim(s: AsyncSession, stage: str, n: int, now: float, lease_s: float) -> list[Claimed]:
    """Lease up to `n` due tasks of running jobs for `stage`, shared evenly across the jobs
    that have due work (oldest job first when there are more jobs than slots)."""
    queue, dispatched, _ = _FLOW[stage]
    jq = select(Job.id, Job.model, Job.output).where(Job.state == JobState.RUNNING.value)
    jq = jq.order_by(Job.created_at, Job.id)
    jobs = {jid: (model, output) for jid, model, output in (await s.execute(jq)).all()}
    if n <= 0 or not jobs:
        return []
    col = _dispatched_col(stage)
    claimed: list[Claimed] = []
    remaining, active = n, list(jobs)
    while remaining > 0 and active:
        share, still = max(1, remaining // len(active)), []
        for jid in active:
            if remaining <= 0:
                break
            take = min(share, remaining)
            sub = (
                select(Task.id)
                .where(Task.job_id == jid, Task.state == queue.value, Task.next_attempt_at <= now)
                .order_by(Task.id)
                .limit(take)
                .scalar_subquery()
            )
            stmt = (
                update(Task)
                .where(Task.id.in_(sub))
                .values(state=dispatched.value, lease_expires_at=now + lease_s, **{col.key: now})
                .returning(Task.id, Task.path, Task.input, Task.gt, Task.matting_output)
                .execution_options(synchronize_session=False)
            )
            rows = (await s.execute(stmt)).all()
            model, output = jobs[jid]
            claimed += [Claimed(i, jid, p, inp, gt, mo, now, model, output)
                        for i, p, inp, gt, mo in rows]
            remaining -= len(rows)
            if len(rows) == take:
                still.append(jid)  # may have more due tasks
        active = still
    if claimed:
        started = {c.job_id for c in claimed}
        await s.execute(
            update(Job)
            .where(Job.id.in_(started))
            .values(started_at=func.coalesce(Job.started_at, now), updated_at=now)
        )
    claimed.sort(key=lambda c: c.id)
    return claimed


def _fence(stage: str, task_id: int, dispatched_at: float) -> list[Any]:
    _, dispatched, _ = _FLOW[stage]
    live = select(Job.id).where(Job.state == JobState.RUNNING.value)
    return [
        Task.id == task_id,
        Task.state == dispatched.value,
        _dispatched_col(stage) == dispatched_at,
        Task.job_id.in_(live),
    ]


async def _touch_job(s: AsyncSession, job_id: str, now: float) -> None:
    await s.execute(update(Job).where(Job.id == job_id).values(updated_at=now))


async def record_success(
    s: AsyncSession, stage: str, c: Claimed, result: StageResult, output: str, now: float
) -> bool:
    """Move a leased task on after a stage answer; False when the answer came too late."""
    _, _, after = _FLOW[stage]
    t = result.timings
    values: dict[str, Any] = {
        "state": after.value,
        "lease_expires_at": None,
        "error": None,
        f"{stage}_started_at": t.started,
        f"{stage}_finished_at": t.finished,
        f"{stage}_worker": result.worker_id,
    }
    if stage == "matting":
        values.update(matting_output=output, matting_batch_size=t.batch_size)
    else:
        metrics = result.extra.get("metrics")
        values.update(
            compare_output=output,
            completed_at=now,
            metrics=metrics if isinstance(metrics, dict) else None,
        )
    fence = _fence(stage, c.id, c.dispatched_at)
    res = await s.execute(update(Task).where(*fence).values(**values))
    ok = bool(getattr(res, "rowcount", 0))
    if ok:
        await _touch_job(s, c.job_id, now)
    return ok


async def record_failure(
    s: AsyncSession,
    stage: str,
    c: Claimed,
    error: str,
    *,
    retryable: bool,
    now: float,
    max_retries: int,
    backoff_base: float,
    backoff_max: float,
) -> TaskState | None:
    """Count a failed attempt; the new state (failed or permanently_failed), None if too late."""
    q = select(Task.retry_count).where(*_fence(stage, c.id, c.dispatched_at))
    count = (await s.execute(q)).scalar_one_or_none()
    if count is None:
        return None
    count += 1
    final = not retryable or count >= max_retries
    state = TaskState.PERMANENTLY_FAILED if final else TaskState.FAILED
    await s.execute(
        update(Task)
        .where(Task.id == c.id)
        .values(
            state=state.value,
            retry_count=count,
            failed_stage=stage,
            error=error[:4000],
            lease_expires_at=None,
            next_attempt_at=now + backoff_s(count, backoff_base, backoff_max),
        )
    )
    await _touch_job(s, c.job_id, now)
    return state


async def release(s: AsyncSession, stage: str, c: Claimed, not_before: float) -> bool:
    """Give a lease back without counting an attempt (the stage was unreachable or full)."""
    queue, _, _ = _FLOW[stage]
    res = await s.execute(
        update(Task)
        .where(*_fence(stage, c.id, c.dispatched_at))
        .values(state=queue.value, lease_expires_at=None, next_attempt_at=not_before)
    )
    return bool(getattr(res, "rowcount", 0))


async def requeue_due(s: AsyncSession, now: float) -> int:
    """Failed tasks whose backoff is over go back to the queue of the stage that failed."""
    n = 0
    for stage in STAGES:
        queue, _, _ = _FLOW[stage]
        res = await s.execute(
            update(Task)
            .where(
                Task.state == TaskState.FAILED.value,
                Task.failed_stage == stage,
                Task.next_attempt_at <= now,
            )
            .values(state=queue.value)
        )
        n += int(getattr(res, "rowcount", 0))
    return n


async def reclaim_expired(s: AsyncSession, now: float, max_retries: int) -> int:
    """Leases that ran out without an answer count as a failed attempt, retried at once."""
    n = 0
    for stage in STAGES:
        _, dispatched, _ = _FLOW[stage]
        res = await s.execute(
            update(Task)
            .where(Task.state == dispatched.value, Task.lease_expires_at < now)
            .values(
                retry_count=Task.retry_count + 1,
                state=case(
                    (Task.retry_count + 1 >= max_retries, TaskState.PERMANENTLY_FAILED.value),
                    else_=TaskState.FAILED.value,
                ),
                failed_stage=stage,
                error=f"no answer from the {stage} stage before the lease expired",
                lease_expires_at=None,
                next_attempt_at=now,
            )
        )
        n += int(getattr(res, "rowcount", 0))
    return n


async def release_dispatched(s: AsyncSession) -> int:
    """At startup: whatever the previous gateway process had in flight goes back to its queue
    (its answer can never arrive here); not counted as an attempt."""
    n = 0
    for stage in STAGES:
        queue, dispatched, _ = _FLOW[stage]
        res = await s.execute(
            update(Task)
            .where(Task.state == dispatched.value)
            .values(state=queue.value, lease_expires_at=None)
        )
        n += int(getattr(res, "rowcount", 0))
    return n


@dataclass(frozen=True)
class FinishedJob:
    job_id: str
    state: JobState


async def finish_jobs(s: AsyncSession, now: float) -> list[FinishedJob]:
    """Close running jobs that have no unfinished task left (and all `total` tasks created)."""
    done: list[FinishedJob] = []
    for job_id, total in (await s.execute(
        select(Job.id, Job.total).where(Job.state == JobState.RUNNING.value)
    )).all():
        busy = select(Task.id).where(Task.job_id == job_id, Task.state.in_(_UNFINISHED)).limit(1)
        if (await s.execute(busy)).first() is not None:
            continue
        counts = await job_counts(s, job_id)
        if sum(counts.values()) < total:
            continue  # ingest is still adding tasks
        completed = counts.get(TaskState.COMPLETED.value, 0)
        bad = sum(counts.values()) - completed
        error = None
        if not completed:
            state = JobState.FAILED
            error = "no image completed" if counts else "the upload held no image"
        else:
            state = JobState.COMPLETED_WITH_ERRORS if bad else JobState.COMPLETED
        values: dict[str, Any] = {"state": state.value, "finished_at": now, "updated_at": now}
        if error:
            values["error"] = error
        await s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING.value)
            .values(**values)
        )
        done.append(FinishedJob(job_id, state))
    return done


async def jobs_needing_callback(s: AsyncSession, exclude: Iterable[str]) -> list[Job]:
    q = select(Job).where(
        Job.state.in_([st.value for st in FINAL_JOB_STATES]),
        Job.callback_url.is_not(None),
        Job.callback_done.is_(False),
    )
    skip = set(exclude)
    return [j for j in (await s.execute(q)).scalars() if j.id not in skip]


async def mark_callback_done(s: AsyncSession, job_id: str) -> None:
    await s.execute(update(Job).where(Job.id == job_id).values(callback_done=True))
