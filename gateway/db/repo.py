"""Every query and transition of the task database, in short transactions.

Every SQL statement of the gateway lives here or in `gateway.db.transitions`. The callers open
the session and its transaction (`async with db.write() as s:` or `db.read()`, see
`gateway.db.database`); on SQLite each write transaction is `BEGIN IMMEDIATE`, so a claim's
read-then-update is atomic against any other writer. Stage answers are fenced by the dispatch
timestamp the claim wrote: an answer for an attempt that has since been re-leased matches no
row and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gateway.db.tables import TASK_COUNTS, Job, Task, Upload, UploadPart, task_counts
from shared.stages import Stage
from shared.states import FINAL_JOB_STATES, JobState, TaskState

__all__ = [
    "MATTED_STATES",
    "OutputRow",
    "OutputTotals",
    "add_upload",
    "add_upload_parts",
    "compact_counts",
    "count_callback_attempt",
    "count_jobs",
    "count_jobs_in_states",
    "count_jobs_since",
    "count_tasks",
    "count_tasks_sync",
    "create_job",
    "delete_job",
    "delete_upload",
    "done_outputs_for_key",
    "done_outputs_for_keys",
    "existing_job_ids",
    "expired_upload_ids",
    "get_job",
    "get_upload",
    "global_counts",
    "insert_tasks",
    "job_counts",
    "job_counts_many",
    "job_counts_sync",
    "job_sync",
    "jobs_in_state",
    "jobs_needing_callback",
    "list_jobs",
    "list_tasks",
    "list_tasks_sync",
    "mark_callback_done",
    "nth_created_since",
    "open_uploads",
    "output_page_sync",
    "output_totals_sync",
    "pending_tasks_page",
    "ping",
    "report_page",
    "report_page_sync",
    "set_job",
    "set_upload",
    "stage_stats",
    "task_page_sync",
    "unsized_page_sync",
    "update_tasks",
    "upload_etags",
    "uploads_without_job",
]


async def ping(s: AsyncSession) -> None:
    """One round trip: the database answers (`/health`)."""
    await s.execute(text("SELECT 1"))


# --- jobs ----------------------------------------------------------------------------------
async def create_job(s: AsyncSession, job_id: str, **fields: Any) -> Job:
    job = Job(id=job_id, **fields)
    s.add(job)
    await s.flush()
    return job


async def get_job(s: AsyncSession, job_id: str, *, owner: str | None = None) -> Job | None:
    """The job; with `owner` (a key hash), only if that key created it."""
    if owner is None:
        return await s.get(Job, job_id)
    return (await s.execute(_owned_job_q(job_id, owner))).scalar_one_or_none()


def _owned_job_q(job_id: str, owner: str) -> Select[Job]:
    return select(Job).where(Job.id == job_id, Job.api_key_hash == owner)


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
    if s.get_bind().dialect.name == "sqlite":
        # the rows the delete trigger left at zero; on Postgres its deltas already net the
        # job to zero, and `compact_counts` drops them (deleting them here could miss a delta
        # another gateway commits meanwhile)
        await s.execute(delete(task_counts).where(task_counts.c.job_id == job_id))
    if not keep_job:
        await s.execute(delete(Job).where(Job.id == job_id))


async def jobs_in_state(s: AsyncSession, state: JobState) -> list[str]:
    rows = await s.execute(select(Job.id).where(Job.state == state.value))
    return list(rows.scalars())


async def list_jobs(
    s: AsyncSession, limit: int, offset: int, *, owner: str | None = None
) -> list[Job]:
    """A page of jobs, newest first; with `owner` (a key hash), only that key's."""
    q = select(Job)
    if owner is not None:
        q = q.where(Job.api_key_hash == owner)
    q = q.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    return list((await s.execute(q)).scalars())


async def count_jobs(s: AsyncSession, *, owner: str | None = None) -> int:
    q = select(func.count()).select_from(Job)
    if owner is not None:
        q = q.where(Job.api_key_hash == owner)
    return int((await s.execute(q)).scalar_one())


_C = task_counts


_N = func.sum(_C.c.n)
"""A counter is the sum of its rows: one per (job, state) on SQLite, deltas on Postgres."""


async def job_counts(s: AsyncSession, job_id: str) -> dict[str, int]:
    """The job's tasks by state, from the trigger-kept counters (`tables.TASK_COUNTS`): a
    few rows whatever the job's size."""
    return {state: int(n) for state, n in (await s.execute(_counts_q(job_id))).all()}


def _counts_q(job_id: str) -> Select[str, Any]:
    return (select(_C.c.state, _N).where(_C.c.job_id == job_id)
            .group_by(_C.c.state).having(_N > 0))


async def job_counts_many(s: AsyncSession, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {j: {} for j in job_ids}
    if job_ids:
        q = (select(_C.c.job_id, _C.c.state, _N).where(_C.c.job_id.in_(list(job_ids)))
             .group_by(_C.c.job_id, _C.c.state).having(_N > 0))
        for job_id, state, n in (await s.execute(q)).all():
            out[job_id][state] = int(n)
    return out


async def compact_counts(s: AsyncSession) -> int:
    """Postgres: fold the counters' delta rows into one row per (job, state), dropping those
    that net to zero (a deleted job's); the rows folded. SQLite: nothing (one row each).
    Concurrent deltas are safe: the fold deletes and re-adds only rows it saw."""
    if s.get_bind().dialect.name == "sqlite":
        return 0
    res = await s.execute(text(
        f"WITH gone AS (DELETE FROM {TASK_COUNTS} RETURNING job_id, state, n), "
        f"kept AS (INSERT INTO {TASK_COUNTS} (job_id, state, n) "
        "SELECT job_id, state, sum(n) FROM gone GROUP BY job_id, state HAVING sum(n) <> 0 "
        "RETURNING 1) SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept)"))
    return int(res.scalar_one())


async def global_counts(s: AsyncSession) -> tuple[dict[str, int], dict[str, int]]:
    """(tasks by state, jobs by state) over the whole database, for /metrics."""
    tq = select(_C.c.state, _N).group_by(_C.c.state).having(_N > 0)
    jq = select(Job.state, func.count()).group_by(Job.state)
    tasks = {st: int(n) for st, n in (await s.execute(tq)).all()}
    jobs = {st: int(n) for st, n in (await s.execute(jq)).all()}
    return tasks, jobs


async def stage_stats(s: AsyncSession, job_id: str) -> dict[str, Any]:
    """Where the time goes: mean worker time and mean wait (dispatch → worker start) per stage,
    and how many images each worker did."""
    out: dict[str, Any] = {}
    for stage in Stage:
        cols = stage.columns
        disp, start, fin, worker = (
            getattr(Task, cols.dispatched_at),
            getattr(Task, cols.started_at),
            getattr(Task, cols.finished_at),
            getattr(Task, cols.worker),
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
    s: AsyncSession, job_id: str, state: str | None, limit: int, offset: int,
    after: int | None = None,
) -> list[Task]:
    """A page of the job's tasks by id: `offset` rows skipped (O(depth)), or, with `after`,
    those whose id is above it (O(page), at any depth); both may be combined."""
    return list((await s.execute(_tasks_q(job_id, state, limit, offset, after))).scalars())


def _tasks_q(job_id: str, state: str | None, limit: int, offset: int,
             after: int | None) -> Select[Task]:
    q = select(Task).where(Task.job_id == job_id)
    if state:
        q = q.where(Task.state == state)
    if after is not None:
        # keyset paging: (job_id[, state], rowid) indexes, so any depth costs what page 1 does
        q = q.where(Task.id > after)
    q = q.order_by(Task.id).limit(limit)
    if offset:
        q = q.offset(offset)
    return q


async def count_tasks(s: AsyncSession, job_id: str, state: str | None) -> int:
    """From the counters (`job_counts`), not by counting rows."""
    return int((await s.execute(_count_tasks_q(job_id, state))).scalar_one())


def _count_tasks_q(job_id: str, state: str | None) -> Select[Any]:
    q = select(func.coalesce(func.sum(_C.c.n), 0)).where(_C.c.job_id == job_id)
    if state:
        q = q.where(_C.c.state == state)
    return q


async def report_page(
    s: AsyncSession, job_id: str, after: tuple[str, int] | None, limit: int
) -> list[Task]:
    """Up to `limit` of the job's tasks in report order (path, then id), after the row keyed
    `after`: keyset paging on ix_tasks_job_path, so page 1000 costs what page 1 does and no
    read holds every row of a million-image job."""
    return list((await s.execute(_report_q(job_id, after, limit))).scalars())


_Q = TypeVar("_Q", bound="Select[*tuple[Any, ...]]")


def _report_q(job_id: str, after: tuple[str, int] | None, limit: int) -> Select[Task]:
    return _in_report_order(select(Task), job_id, after, limit)


def _in_report_order(q: _Q, job_id: str, after: tuple[str, int] | None, limit: int) -> _Q:
    q = q.where(Task.job_id == job_id)
    if after is not None:
        q = q.where(tuple_(Task.path, Task.id) > tuple_(literal(after[0]), literal(after[1])))
    return q.order_by(Task.path, Task.id).limit(limit)


class OutputRow(NamedTuple):
    """What a finished job's zip needs of a task: its outputs' names derive from `path`,
    `state` says whether it has any; `id` keys the next page."""

    path: str
    state: str
    id: int
    output_files: int | None = None
    """How many zip members the task had when it completed, and their bytes (`Task`):
    the zip checks its files against them as it sends them."""
    output_bytes: int | None = None
    output_name_bytes: int | None = None
    """Their names' UTF-8 bytes in the zip, summed: with the two above, the task's exact
    length in the zip (`gateway.results.zip_processes` cuts the zip into parts by it)."""


class OutputTotals(NamedTuple):
    """A job's recorded output sizes, summed (`output_totals_sync`): its zip's length without
    a `stat` per file."""

    unsized: int
    """Rows that may have outputs but no recorded sizes (a failed task, a row from before
    the columns): while there is one, the zip is sized by `stat`."""
    sized: int
    files: int
    bytes: int
    name_bytes: int


_OUTPUT_COLUMNS = (Task.path, Task.state, Task.id, Task.output_files, Task.output_bytes,
                   Task.output_name_bytes)
"""`OutputRow`'s columns, in its order."""


def output_page_sync(s: Session, job_id: str, after: tuple[str, int] | None,
                     limit: int) -> list[OutputRow]:
    """`report_page_sync`'s rows, as `OutputRow`s (plain tuples): a finished job's zip is
    walked twice, and building every column of an ORM row was most of a walk's cost."""
    q = _in_report_order(select(*_OUTPUT_COLUMNS), job_id, after, limit)
    return [OutputRow(*r) for r in s.execute(q)]


def unsized_page_sync(s: Session, job_id: str, after: tuple[str, int] | None,
                      limit: int) -> list[OutputRow]:
    """`output_page_sync` of the rows that may have outputs but no recorded sizes
    (`OutputTotals.unsized`: a failed task's cut-out, say), for the zip to `stat` them."""
    q = select(*_OUTPUT_COLUMNS).where(
        Task.output_files.is_(None), Task.state != TaskState.REJECTED.value)
    return [OutputRow(*r) for r in s.execute(_in_report_order(q, job_id, after, limit))]


def output_totals_sync(s: Session, job_id: str) -> OutputTotals:
    """The job's recorded output sizes, summed, in one aggregate query (`OutputTotals`)."""
    unsized = case((and_(Task.output_files.is_(None),
                         Task.state != TaskState.REJECTED.value), 1), else_=0)
    q = select(func.coalesce(func.sum(unsized), 0), func.count(Task.output_files),
               func.coalesce(func.sum(Task.output_files), 0),
               func.coalesce(func.sum(Task.output_bytes), 0),
               func.coalesce(func.sum(Task.output_name_bytes), 0)).where(Task.job_id == job_id)
    row = s.execute(q).one()
    return OutputTotals(*(int(v) for v in row))


# --- one-hop reads (`Database.snapshot`): the same statements on a blocking session --------
def job_sync(s: Session, job_id: str, owner: str | None = None) -> Job | None:
    """`get_job` in a snapshot."""
    if owner is None:
        return s.get(Job, job_id)
    return s.execute(_owned_job_q(job_id, owner)).scalar_one_or_none()


def job_counts_sync(s: Session, job_id: str) -> dict[str, int]:
    """`job_counts` in a snapshot."""
    return {state: int(n) for state, n in s.execute(_counts_q(job_id)).all()}


def list_tasks_sync(s: Session, job_id: str, state: str | None, limit: int, offset: int,
                    after: int | None = None) -> list[Task]:
    """`list_tasks` in a snapshot."""
    return list(s.execute(_tasks_q(job_id, state, limit, offset, after)).scalars())


def count_tasks_sync(s: Session, job_id: str, state: str | None) -> int:
    """`count_tasks` in a snapshot."""
    return int(s.execute(_count_tasks_q(job_id, state)).scalar_one())


def task_page_sync(s: Session, job_id: str, owner: str | None, state: str | None, limit: int,
                   offset: int, after: int | None) -> tuple[Job | None, list[Task], int]:
    """A task page's whole read (`/jobs/{id}/tasks`, the gallery) in one snapshot: the job as
    `owner` may see it (None: not found), its page of tasks and their total."""
    job = job_sync(s, job_id, owner)
    if job is None:
        return None, [], 0
    return (job, list_tasks_sync(s, job_id, state, limit, offset, after),
            count_tasks_sync(s, job_id, state))


def report_page_sync(s: Session, job_id: str, after: tuple[str, int] | None,
                     limit: int) -> list[Task]:
    """`report_page` in a snapshot."""
    return list(s.execute(_report_q(job_id, after, limit)).scalars())


async def jobs_needing_callback(s: AsyncSession, exclude: Iterable[str]) -> list[Job]:
    q = select(Job).where(
        Job.state.in_([st.value for st in FINAL_JOB_STATES]),
        Job.callback_url.is_not(None),
        Job.callback_done.is_(False),
    )
    skip = set(exclude)
    return [j for j in (await s.execute(q)).scalars() if j.id not in skip]


async def mark_callback_done(s: AsyncSession, job_id: str, error: str | None = None) -> None:
    """No more webhook attempts for the job: delivered (`error` None) or failed for good."""
    await s.execute(
        update(Job).where(Job.id == job_id).values(callback_done=True, callback_error=error)
    )


async def count_callback_attempt(s: AsyncSession, job_id: str) -> int:
    """Count one more webhook attempt before it is made; the count so far, this one included."""
    await s.execute(
        update(Job).where(Job.id == job_id).values(callback_attempts=Job.callback_attempts + 1)
    )
    return int(await s.scalar(select(Job.callback_attempts).where(Job.id == job_id)) or 0)


# --- quotas: a key's jobs (`gateway.intake.quotas`) ----------------------------------------
def _owner(key_hash: str | None) -> ColumnElement[bool]:
    """The jobs of one API key; NULL is the one anonymous key (no API_KEY configured)."""
    return Job.api_key_hash.is_(None) if key_hash is None else Job.api_key_hash == key_hash


async def count_jobs_in_states(s: AsyncSession, key_hash: str | None, states: Iterable[str]) -> int:
    q = select(func.count()).select_from(Job).where(_owner(key_hash), Job.state.in_(list(states)))
    return int(await s.scalar(q) or 0)


async def count_jobs_since(s: AsyncSession, key_hash: str | None, since: float) -> int:
    """Jobs the key created after `since`, whatever became of them."""
    q = select(func.count()).select_from(Job).where(_owner(key_hash), Job.created_at > since)
    return int(await s.scalar(q) or 0)


async def nth_created_since(
    s: AsyncSession, key_hash: str | None, since: float, n: int
) -> float | None:
    """`created_at` of the key's n-th (0-based, oldest first) job created after `since`."""
    q = (
        select(Job.created_at)
        .where(_owner(key_hash), Job.created_at > since)
        .order_by(Job.created_at)
        .offset(n)
        .limit(1)
    )
    edge = await s.scalar(q)
    return None if edge is None else float(edge)


# --- tasks of an ingest (`gateway.intake.ingest`) ---------------------------------------------
async def insert_tasks(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One executemany for a batch of task rows."""
    if rows:
        await s.execute(insert(Task), rows)


async def pending_tasks_page(
    s: AsyncSession, job_id: str, after: int, limit: int
) -> list[tuple[int, str]]:
    """(id, path) of up to `limit` pending tasks of the job with ids above `after`, by id."""
    q = (
        select(Task.id, Task.path)
        .where(Task.job_id == job_id, Task.id > after, Task.state == TaskState.PENDING.value)
        .order_by(Task.id)
        .limit(limit)
    )
    return [(int(r[0]), str(r[1])) for r in (await s.execute(q)).all()]


async def update_tasks(s: AsyncSession, updates: list[dict[str, Any]]) -> None:
    """Bulk update by primary key: each dict holds `id` and the columns to set."""
    if updates:
        await s.execute(update(Task), updates)


# --- resumable uploads (`gateway.intake.tus_uploads`) -------------------------------------
async def add_upload(s: AsyncSession, upload_id: str, **fields: Any) -> None:
    s.add(Upload(id=upload_id, **fields))


async def get_upload(
    s: AsyncSession, upload_id: str, *, owner: str | None = None
) -> Upload | None:
    """The upload; with `owner` (a key hash), only if that key created it."""
    if owner is None:
        return await s.get(Upload, upload_id)
    q = select(Upload).where(Upload.id == upload_id, Upload.api_key_hash == owner)
    return (await s.execute(q)).scalar_one_or_none()


async def upload_etags(s: AsyncSession, upload_id: str) -> list[str]:
    """The etags of a tus upload's stored parts (on object storage), by part number."""
    q = select(UploadPart.etag).where(UploadPart.upload_id == upload_id).order_by(
        UploadPart.number)
    return list((await s.scalars(q)).all())


async def add_upload_parts(s: AsyncSession, upload_id: str, first: int,
                           etags: Sequence[str]) -> None:
    """Record parts `first`, `first + 1`, … of a tus upload (replacing any row from that
    number on: a part sent again after a crash has a new etag)."""
    await s.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id,
                                             UploadPart.number >= first))
    if etags:
        await s.execute(insert(UploadPart), [
            {"upload_id": upload_id, "number": first + i, "etag": e}
            for i, e in enumerate(etags)])


async def set_upload(s: AsyncSession, upload_id: str, **values: Any) -> None:
    await s.execute(update(Upload).where(Upload.id == upload_id).values(**values))


async def delete_upload(s: AsyncSession, upload_id: str) -> None:
    await s.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    await s.execute(delete(Upload).where(Upload.id == upload_id))


async def expired_upload_ids(
    s: AsyncSession, before: float, born_before: float | None = None
) -> list[str]:
    """Uploads past `expires_at`, and (with `born_before`) unused ones created before it: the
    hard deadline (TUS_MAX_LIFETIME_S) even if their expiry was pushed past it."""
    cond = Upload.expires_at < before
    if born_before is not None:
        cond = cond | (Upload.job_id.is_(None) & (Upload.created_at < born_before))
    return list((await s.execute(select(Upload.id).where(cond))).scalars())


async def open_uploads(s: AsyncSession, key_hash: str | None, now: float) -> tuple[int, int]:
    """How many live uploads the key holds that are not a job yet, and their declared bytes
    (finished-but-unclaimed ones still hold their disk)."""
    owner = Upload.api_key_hash.is_(None) if key_hash is None else Upload.api_key_hash == key_hash
    q = select(func.count(), func.coalesce(func.sum(Upload.length), 0)).where(
        owner, Upload.job_id.is_(None), Upload.expires_at >= now)
    count, total = (await s.execute(q)).one()
    return int(count), int(total or 0)


async def uploads_without_job(s: AsyncSession) -> list[Upload]:
    return list((await s.execute(select(Upload).where(Upload.job_id.is_(None)))).scalars())


async def existing_job_ids(s: AsyncSession, job_ids: Iterable[str]) -> set[str]:
    """Those of `job_ids` that have a job row."""
    q = select(Job.id).where(Job.id.in_(list(job_ids)))
    return set((await s.execute(q)).scalars())


# --- the content-hash cache (gateway.pipeline.result_cache) --------------------------------
MATTED_STATES = (TaskState.MATTING_DONE.value, TaskState.DISPATCHED_COMPARISON.value,
                 TaskState.COMPLETED.value)
"""A task in one of these states has its matting outputs written (until its job goes)."""
_REUSABLE = (Task.state.in_(MATTED_STATES), Task.matting_output.is_not(None),
             Job.state != JobState.CANCELLED.value)
"""A task whose outputs the cache may reuse (both lookups, with Job joined): matted, with an
output, in a job that is not cancelled (its files are being removed)."""


async def done_outputs_for_key(s: AsyncSession, cache_key: str, limit: int = 4) -> list[str]:
    """First matting outputs of tasks with `cache_key` whose matting is done, newest first,
    in jobs that are not cancelled (their files are being removed)."""
    q = (select(Task.matting_output).join(Job, Job.id == Task.job_id)
         .where(Task.cache_key == cache_key, *_REUSABLE)
         .order_by(Task.id.desc()).limit(limit))
    return [o for o in (await s.execute(q)).scalars() if o]


async def done_outputs_for_keys(s: AsyncSession, cache_keys: Iterable[str],
                                limit: int = 4) -> dict[str, list[str]]:
    """`done_outputs_for_key` for many keys in one query (a batch of tasks asks once, not
    once per task): per key its first `limit` outputs, newest first; a key with none is
    absent."""
    keys = sorted({k for k in cache_keys if k})
    if not keys:
        return {}
    rank = func.row_number().over(partition_by=Task.cache_key,
                                  order_by=Task.id.desc()).label("rank")
    ranked = (select(Task.cache_key, Task.matting_output, rank)
              .join(Job, Job.id == Task.job_id)
              .where(Task.cache_key.in_(keys), *_REUSABLE)
              .subquery())
    q = (select(ranked.c.cache_key, ranked.c.matting_output)
         .where(ranked.c.rank <= limit).order_by(ranked.c.cache_key, ranked.c.rank))
    found: dict[str, list[str]] = {}
    for key, out in (await s.execute(q)).all():
        if out:
            found.setdefault(key, []).append(out)
    return found
