"""The scheduler's transitions of the task database, as Core statements on the tables
(half the cost of ORM-enabled updates: the writer applies hundreds per second).

Every function runs inside the caller's write transaction (`Scheduler.write()`), which on
SQLite is `BEGIN IMMEDIATE`: a claim's select-then-update is atomic against any other writer.
Stage answers are fenced by the dispatch timestamp the claim wrote: an answer for an attempt
that has since been re-leased (or whose job is no longer running) matches no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.repo import job_counts
from gateway.db.tables import Job, Task
from shared.finishing import OutputFormat, OutputOptions
from shared.limits import ERROR_MAX_CHARS
from shared.schemas import StageResult
from shared.stages import Stage
from shared.states import FINAL_TASK_STATES, JobState, TaskState

__all__ = [
    "OUTPUT_SIZES_KEY",
    "STAGES",
    "Claimed",
    "FinishedJob",
    "backoff_s",
    "claim",
    "finish_jobs",
    "job_options",
    "lease_holders",
    "reclaim_expired",
    "record_failure",
    "record_success",
    "record_successes",
    "release",
    "release_dispatched",
    "requeue_due",
    "touch_jobs",
]

T = cast(Table, Task.__table__)
J = cast(Table, Job.__table__)

STAGES = tuple(Stage)
"""The two stages, in pipeline order."""
_UNFINISHED = [s.value for s in TaskState if s not in FINAL_TASK_STATES]


def backoff_s(retry_count: int, base: float, cap: float) -> float:
    """Delay before attempt `retry_count + 1`: base, 2·base, 4·base … capped."""
    return float(min(cap, base * 2 ** max(0, retry_count - 1)))


def _dispatched_col(stage: Stage) -> Any:
    return T.c[stage.columns.dispatched_at]


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
    """The job's model option: one engine name, or several separated by commas."""
    output: str
    options: OutputOptions = field(default_factory=OutputOptions)
    """The job's output options (`shared.finishing`): format, max_size, background, crop."""
    cache_key: str | None = None
    """The content-hash cache's key (`gateway.pipeline.result_cache`); None: no reuse."""
    confidence: float | None = None
    """The matting engine's confidence in the cut-out (comparison stage only: the sheet
    shows it)."""

    @property
    def models(self) -> list[str]:
        """The job's engines in the user's order (model against model when more than one)."""
        return [m for m in self.model.split(",") if m]


def job_options(fmt: str | None, max_size: int | None, background: str | None,
                crop: float | None) -> OutputOptions:
    """A job row's output option columns as `OutputOptions` (checked when the job was made;
    a row from before the columns has the defaults)."""
    return OutputOptions(OutputFormat(fmt or OutputFormat.PNG.value), max_size, background, crop)


async def claim(s: AsyncSession, stage: Stage, n: int, now: float, lease_s: float,
                by: str | None = None) -> list[Claimed]:
    """Lease up to `n` due tasks of running jobs for `stage`, shared evenly across the jobs
    that have due work (oldest job first when there are more jobs than slots); `by` (the
    GATEWAY_ID) is written into each leased row's `dispatched_by`.

    On SQLite `BEGIN IMMEDIATE` makes the read-then-update atomic. On Postgres (read
    committed, several gateways) the row choice is `SELECT … FOR UPDATE SKIP LOCKED`: a row
    another claimer has locked is passed over, not waited for, and the UPDATE re-checks the
    state, so no task is leased twice and neither claimer stalls on the other."""
    queue, dispatched = stage.queued_state, stage.dispatched_state
    jq = select(J.c.id, J.c.model, J.c.output, J.c.format, J.c.max_size, J.c.background,
                J.c.crop).where(J.c.state == JobState.RUNNING.value)
    jq = jq.order_by(J.c.created_at, J.c.id)
    jobs = {r[0]: (r[1], r[2], job_options(r[3], r[4], r[5], r[6]))
            for r in (await s.execute(jq)).all()}
    if n <= 0 or not jobs:
        return []
    col = _dispatched_col(stage)
    pg = s.get_bind().dialect.name == "postgresql"
    claimed: list[Claimed] = []
    remaining, active = n, list(jobs)
    while remaining > 0 and active:
        share, still = max(1, remaining // len(active)), []
        for jid in active:
            if remaining <= 0:
                break
            take = min(share, remaining)
            due = (
                select(T.c.id)
                .where(T.c.job_id == jid, T.c.state == queue.value, T.c.next_attempt_at <= now)
                .order_by(T.c.id)
                .limit(take)
            )
            if pg:
                # a materialised CTE: a LIMIT … FOR UPDATE subquery inside IN may be run more
                # than once by the planner and lease more than `take` rows
                picked = (due.with_for_update(skip_locked=True).cte("picked")
                          .prefix_with("MATERIALIZED"))
                sub: Any = select(picked.c.id).scalar_subquery()
                recheck = [T.c.state == queue.value]
            else:
                # one statement under BEGIN IMMEDIATE: the rows cannot change between the
                # subquery and the update, and a re-check of the state would let SQLite
                # drive the update from a state index, visiting every queued task of the
                # stage for each claim (issue 17: 7 ms a claim with 50 000 queued, against
                # 0.8 ms by the ids)
                sub, recheck = due.scalar_subquery(), []
            stmt = (
                update(T)
                .where(T.c.id.in_(sub), *recheck)
                .values(state=dispatched.value, lease_expires_at=now + lease_s,
                        dispatched_by=by, **{col.key: now})
                .returning(T.c.id, T.c.path, T.c.input, T.c.gt, T.c.matting_output,
                           T.c.cache_key, T.c.confidence)
            )
            rows = (await s.execute(stmt)).all()
            model, output, options = jobs[jid]
            claimed += [Claimed(i, jid, p, inp, gt, mo, now, model, output, options, ck, conf)
                        for i, p, inp, gt, mo, ck, conf in rows]
            remaining -= len(rows)
            if len(rows) == take:
                still.append(jid)  # may have more due tasks
        active = still
    if claimed:
        started = {c.job_id for c in claimed}
        await s.execute(
            update(J)
            .where(J.c.id.in_(started))
            .values(started_at=func.coalesce(J.c.started_at, now), updated_at=now)
        )
    claimed.sort(key=lambda c: c.id)
    return claimed


def _fence(stage: Stage, task_id: int, dispatched_at: float) -> list[Any]:
    live = select(J.c.id).where(J.c.state == JobState.RUNNING.value)
    return [
        T.c.id == task_id,
        T.c.state == stage.dispatched_state.value,
        _dispatched_col(stage) == dispatched_at,
        T.c.job_id.in_(live),
    ]


async def touch_jobs(s: AsyncSession, job_ids: Iterable[str], now: float) -> None:
    """Bump `updated_at` of jobs whose tasks moved (once per batch of answers)."""
    ids = sorted(set(job_ids))
    if ids:
        await s.execute(update(J).where(J.c.id.in_(ids)).values(updated_at=now))


OUTPUT_SIZES_KEY = "output_sizes"
"""Where the scheduler puts a completed task's measured outputs (files, bytes, name bytes:
`gateway.results.output_sizes`) in its comparison `StageResult.extra`, as a tuple: always set
by the gateway itself, and a worker's JSON can hold no tuple, so no answer can forge it."""
_SIZE_COLUMNS = ("output_files", "output_bytes", "output_name_bytes")


def _output_sizes(v: Any) -> dict[str, int | None]:
    """The three size columns from `OUTPUT_SIZES_KEY`'s value; None each when unmeasured."""
    if (isinstance(v, tuple) and len(v) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
        return dict(zip(_SIZE_COLUMNS, v, strict=True))
    return dict.fromkeys(_SIZE_COLUMNS)


def _confidence(v: Any) -> float | None:
    """A worker's confidence as stored: a number in [0, 1], else nothing (never trusted
    blindly: a worker of another version may send anything)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if 0.0 <= f <= 1.0 else None


async def record_success(
    s: AsyncSession, stage: Stage, c: Claimed, result: StageResult, output: str, now: float
) -> bool:
    """Move a leased task on after a stage answer; False when the answer came too late."""
    t, cols = result.timings, stage.columns
    values: dict[str, Any] = {
        "state": stage.done_state.value,
        "lease_expires_at": None,
        "error": None,
        cols.started_at: t.started,
        cols.finished_at: t.finished,
        cols.worker: result.worker_id,
        cols.output: output,
    }
    if stage is Stage.MATTING:
        fallback = result.extra.get("fallback")
        values.update(matting_batch_size=t.batch_size,
                      confidence=_confidence(result.extra.get("confidence")),
                      fallback=fallback if isinstance(fallback, dict) else None)
    else:
        metrics = result.extra.get("metrics")
        values.update(completed_at=now, metrics=metrics if isinstance(metrics, dict) else None)
        values.update(_output_sizes(result.extra.get(OUTPUT_SIZES_KEY)))
    fence = _fence(stage, c.id, c.dispatched_at)
    res = await s.execute(update(T).where(*fence).values(**values))
    return bool(getattr(res, "rowcount", 0))


async def record_successes(
    s: AsyncSession, stage: Stage, done: Sequence[tuple[Claimed, StageResult, str]], now: float
) -> list[bool]:
    """`record_success` for many answers in two statements instead of one per answer: one
    read of the fences (rows still leased by these very claims, of running jobs), then one
    executemany UPDATE of the rows that pass. On SQLite the caller's write transaction holds
    the database's one write lock, so nothing can move a row between the two; on Postgres
    the read locks the rows (`FOR UPDATE`, in id order) until the commit. Per answer: False
    when it came too late, as `record_success` says."""
    if not done:
        return []
    col = _dispatched_col(stage)
    ids = [c.id for c, _, _ in done]
    live = select(J.c.id).where(J.c.state == JobState.RUNNING.value)
    q = (select(T.c.id, col).where(T.c.id.in_(ids), T.c.state == stage.dispatched_state.value,
                                   T.c.job_id.in_(live))
         .order_by(T.c.id).with_for_update(of=T))
    leased = {int(i): d for i, d in (await s.execute(q)).all()}
    ok = [leased.get(c.id) == c.dispatched_at for c, _, _ in done]
    cols = stage.columns
    names = ["state", "lease_expires_at", "error", cols.started_at, cols.finished_at,
             cols.worker, cols.output]
    names += (["matting_batch_size", "confidence", "fallback"] if stage is Stage.MATTING
              else ["completed_at", "metrics", *_SIZE_COLUMNS])
    stmt = (update(T).where(T.c.id == bindparam("b_id"))
            .values({n: bindparam(f"b_{n}", type_=T.c[n].type) for n in names}))
    rows: list[dict[str, Any]] = []
    for (c, result, output), good in zip(done, ok, strict=True):
        if not good:
            continue
        t = result.timings
        row: dict[str, Any] = {
            "b_id": c.id, "b_state": stage.done_state.value, "b_lease_expires_at": None,
            "b_error": None, f"b_{cols.started_at}": t.started,
            f"b_{cols.finished_at}": t.finished, f"b_{cols.worker}": result.worker_id,
            f"b_{cols.output}": output,
        }
        if stage is Stage.MATTING:
            fallback = result.extra.get("fallback")
            row["b_matting_batch_size"] = t.batch_size
            row["b_confidence"] = _confidence(result.extra.get("confidence"))
            row["b_fallback"] = fallback if isinstance(fallback, dict) else None
        else:
            metrics = result.extra.get("metrics")
            row["b_completed_at"] = now
            row["b_metrics"] = metrics if isinstance(metrics, dict) else None
            row.update({f"b_{k}": v for k, v in
                        _output_sizes(result.extra.get(OUTPUT_SIZES_KEY)).items()})
        rows.append(row)
    if rows:
        await s.execute(stmt, rows)
    return ok


async def record_failure(
    s: AsyncSession,
    stage: Stage,
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
    q = (select(T.c.retry_count).where(*_fence(stage, c.id, c.dispatched_at))
         .with_for_update(of=T))
    count = (await s.execute(q)).scalar_one_or_none()
    if count is None:
        return None
    count += 1
    final = not retryable or count >= max_retries
    state = TaskState.PERMANENTLY_FAILED if final else TaskState.FAILED
    await s.execute(
        update(T)
        .where(T.c.id == c.id)
        .values(
            state=state.value,
            retry_count=count,
            failed_stage=stage.value,
            error=error[:ERROR_MAX_CHARS],
            lease_expires_at=None,
            next_attempt_at=now + backoff_s(count, backoff_base, backoff_max),
        )
    )
    return state


async def release(
    s: AsyncSession, stage: Stage, c: Claimed, not_before: float, error: str | None = None
) -> bool:
    """Give a lease back without counting an attempt (the stage was unreachable, saturated or
    out of disk); `error` says why on the waiting task, until an answer clears it."""
    values: dict[str, Any] = {
        "state": stage.queued_state.value, "lease_expires_at": None, "next_attempt_at": not_before,
    }
    if error:
        values["error"] = error[:ERROR_MAX_CHARS]
    res = await s.execute(
        update(T).where(*_fence(stage, c.id, c.dispatched_at)).values(**values)
    )
    return bool(getattr(res, "rowcount", 0))


async def requeue_due(s: AsyncSession, now: float) -> int:
    """Failed tasks whose backoff is over go back to the queue of the stage that failed."""
    n = 0
    for stage in STAGES:
        res = await s.execute(
            update(T)
            .where(
                T.c.state == TaskState.FAILED.value,
                T.c.failed_stage == stage.value,
                T.c.next_attempt_at <= now,
            )
            .values(state=stage.queued_state.value)
        )
        n += int(getattr(res, "rowcount", 0))
    return n


async def reclaim_expired(s: AsyncSession, now: float, max_retries: int) -> int:
    """Leases that ran out without an answer count as a failed attempt, retried at once."""
    n = 0
    for stage in STAGES:
        res = await s.execute(
            update(T)
            .where(T.c.state == stage.dispatched_state.value, T.c.lease_expires_at < now)
            .values(
                retry_count=T.c.retry_count + 1,
                state=case(
                    (T.c.retry_count + 1 >= max_retries, TaskState.PERMANENTLY_FAILED.value),
                    else_=TaskState.FAILED.value,
                ),
                failed_stage=stage.value,
                error=f"no answer from the {stage} stage before the lease expired",
                lease_expires_at=None,
                next_attempt_at=now,
            )
        )
        n += int(getattr(res, "rowcount", 0))
    return n


async def release_dispatched(s: AsyncSession, by: str | None = None) -> int:
    """At startup: whatever the previous gateway process had in flight goes back to its queue
    (its answer can never arrive here); not counted as an attempt.

    `by` (several gateways on one Postgres): only the tasks that gateway id leased; the other
    gateways' leases are theirs, and a dead one's come back when they expire
    (`reclaim_expired`). None: every lease (one gateway, SQLite)."""
    n = 0
    for stage in STAGES:
        q = update(T).where(T.c.state == stage.dispatched_state.value)
        if by is not None:
            q = q.where(T.c.dispatched_by == by)
        res = await s.execute(
            q.values(state=stage.queued_state.value, lease_expires_at=None)
        )
        n += int(getattr(res, "rowcount", 0))
    return n


async def lease_holders(s: AsyncSession) -> list[str]:
    """The gateway ids (`dispatched_by`) that hold leases now (a few: one per gateway)."""
    dispatched = [st.dispatched_state.value for st in STAGES]
    q = (select(T.c.dispatched_by).where(T.c.state.in_(dispatched),
                                         T.c.dispatched_by.is_not(None)).distinct())
    return sorted(str(b) for b in (await s.execute(q)).scalars())


@dataclass(frozen=True)
class FinishedJob:
    job_id: str
    state: JobState


async def finish_jobs(s: AsyncSession, now: float,
                      job_ids: Iterable[str] | None = None) -> list[FinishedJob]:
    """Close running jobs that have no unfinished task left (and all `total` tasks created).

    `job_ids`: only those (the scheduler's writer, as their last answers land), else every
    running job (the maintenance pass)."""
    done: list[FinishedJob] = []
    q = select(J.c.id, J.c.total).where(J.c.state == JobState.RUNNING.value)
    if job_ids is not None:
        ids = sorted(set(job_ids))
        if not ids:
            return done
        q = q.where(J.c.id.in_(ids))
    for job_id, total in (await s.execute(q)).all():
        # one read of the counters, not a look for unfinished rows and then a count: under
        # read committed (Postgres) an ingest could add tasks between two statements
        counts = await job_counts(s, job_id)
        if any(counts.get(st, 0) for st in _UNFINISHED):
            continue
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
            update(J)
            .where(J.c.id == job_id, J.c.state == JobState.RUNNING.value)
            .values(**values)
        )
        done.append(FinishedJob(job_id, state))
    return done


