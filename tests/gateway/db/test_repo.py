"""The task database's transitions, on a real SQLite file and a real Postgres database
(`database_url`, tests/gateway/db/conftest.py) with the gateway's engine setup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db import repo, transitions
from gateway.db import transitions as tr
from gateway.db.tables import Job, Task, create_engine, init_db, session_factory
from shared.schemas import StageResult, Timings
from shared.stages import Stage
from shared.states import JobState, TaskState

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[tuple[str, Sessions]]:
    url = database_url
    engine = create_engine(url)
    await init_db(engine)
    yield url, session_factory(engine)
    await engine.dispose()


async def add_job(sessions: Sessions, job_id: str, n: int, state: str = "running",
                  **kw: Any) -> None:
    async with sessions.begin() as s:
        s.add(Job(id=job_id, state=state, total=n, created_at=kw.pop("created_at", time.time())))
        await s.flush()
        for i in range(n):
            s.add(Task(job_id=job_id, path=f"img{i:04d}.jpg", input=f"input/{job_id}/{i}.jpg",
                       **kw))


async def task(sessions: Sessions, task_id: int) -> Task:
    async with sessions() as s:
        t = await s.get(Task, task_id)
        assert t is not None
        return t


def ok_result() -> StageResult:
    now = time.time()
    return StageResult(output="x", worker_id="w9",
                       timings=Timings(queued=now, started=now, finished=now + 0.5, batch_size=3),
                       extra={"metrics": {"sad": 1.0}})


async def claim(sessions: Sessions, stage: Stage, n: int, now: float | None = None,
                lease: float = 60.0) -> list[transitions.Claimed]:
    async with sessions.begin() as s:
        return await transitions.claim(s, stage, n, time.time() if now is None else now, lease)


async def test_concurrent_claimers_never_share_a_task(db: tuple[str, Sessions]) -> None:
    url, sessions = db
    await add_job(sessions, "j1", 120)
    # Two engines: two connections in two threads, racing for the same rows.
    engines = [create_engine(url) for _ in range(2)]
    makers = [session_factory(e) for e in engines]
    got: list[list[int]] = [[], []]
    both_in = asyncio.Barrier(2)  # each claims once before either goes on: they really compete

    async def claimer(k: int) -> None:
        first = True
        while True:
            batch = await claim(makers[k], Stage.MATTING, 7)
            if not batch:
                return
            got[k] += [c.id for c in batch]
            if first:
                first = False
                await both_in.wait()
            await asyncio.sleep(0.002)  # let the other one in: they must really interleave

    await asyncio.gather(claimer(0), claimer(1))
    for e in engines:
        await e.dispose()
    assert not set(got[0]) & set(got[1])
    assert len(got[0]) + len(got[1]) == 120
    assert got[0] and got[1]  # both really competed
    async with sessions() as s:
        states = set((await s.execute(select(Task.state))).scalars())
    assert states == {TaskState.DISPATCHED_MATTING.value}


async def test_claim_takes_only_due_tasks_of_running_jobs_fairly(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "old", 10, created_at=1.0)
    await add_job(sessions, "new", 10, created_at=2.0)
    await add_job(sessions, "ingest", 5, state="ingesting")
    await add_job(sessions, "later", 5, next_attempt_at=time.time() + 3600)
    batch = await claim(sessions, Stage.MATTING, 8)
    by_job = {j: sum(c.job_id == j for c in batch) for j in ("old", "new", "ingest", "later")}
    assert by_job == {"old": 4, "new": 4, "ingest": 0, "later": 0}
    rest = await claim(sessions, Stage.MATTING, 100)
    assert len(rest) == 12
    async with sessions() as s:
        job = await s.get(Job, "old")
        assert job is not None and job.started_at is not None


async def test_success_moves_on_and_keeps_timings(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1)
    (c,) = await claim(sessions, Stage.MATTING, 1)
    async with sessions.begin() as s:
        assert await tr.record_success(s, Stage.MATTING, c, ok_result(), "mo/x.png", time.time())
    t = await task(sessions, c.id)
    assert t.state == "matting_done" and t.matting_worker == "w9" and t.matting_batch_size == 3
    assert t.matting_output == "mo/x.png" and t.lease_expires_at is None
    (c2,) = await claim(sessions, Stage.COMPARISON, 5)
    assert c2.matting_output == "mo/x.png"
    async with sessions.begin() as s:
        assert await tr.record_success(s, Stage.COMPARISON, c2, ok_result(), "fr/x.jpg",
                                       time.time())
    t = await task(sessions, c.id)
    assert t.state == "completed" and t.metrics == {"sad": 1.0} and t.completed_at is not None


async def fail(sessions: Sessions, c: transitions.Claimed, retryable: bool = True,
               now: float | None = None) -> TaskState | None:
    async with sessions.begin() as s:
        return await transitions.record_failure(
            s, Stage.MATTING, c, "boom", retryable=retryable, now=now or time.time(), max_retries=3,
            backoff_base=1.0, backoff_max=60.0,
        )


async def test_retry_backoff_then_permanently_failed(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1)
    now = time.time()
    delays = []
    for attempt in (1, 2):
        (c,) = await claim(sessions, Stage.MATTING, 1, now=now)
        assert await fail(sessions, c, now=now) == TaskState.FAILED
        t = await task(sessions, c.id)
        assert t.retry_count == attempt and t.failed_stage == "matting" and t.error == "boom"
        delays.append(t.next_attempt_at - now)
        async with sessions.begin() as s:
            assert await transitions.requeue_due(s, now) == 0  # not yet due
            now = t.next_attempt_at
            assert await transitions.requeue_due(s, now) == 1
    assert delays == [1.0, 2.0]
    (c,) = await claim(sessions, Stage.MATTING, 1, now=now)
    assert await fail(sessions, c, now=now) == TaskState.PERMANENTLY_FAILED
    t = await task(sessions, c.id)
    assert t.state == "permanently_failed" and t.retry_count == 3


async def test_non_retryable_error_fails_at_once(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1)
    (c,) = await claim(sessions, Stage.MATTING, 1)
    assert await fail(sessions, c, retryable=False) == TaskState.PERMANENTLY_FAILED
    assert (await task(sessions, c.id)).retry_count == 1


async def test_expired_lease_returns_task_and_late_answer_is_ignored(
    db: tuple[str, Sessions],
) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1)
    now = time.time()
    (first,) = await claim(sessions, Stage.MATTING, 1, now=now, lease=10.0)
    async with sessions.begin() as s:
        assert await transitions.reclaim_expired(s, now + 5, max_retries=3) == 0
        assert await transitions.reclaim_expired(s, now + 11, max_retries=3) == 1
        assert await transitions.requeue_due(s, now + 11) == 1
    t = await task(sessions, first.id)
    assert t.state == "pending" and t.retry_count == 1 and "lease" in (t.error or "")
    (second,) = await claim(sessions, Stage.MATTING, 1, now=now + 12)
    async with sessions.begin() as s:
        # the first attempt answers at last: same state, but an older lease → ignored
        assert not await transitions.record_success(s, Stage.MATTING, first, ok_result(), "a",
                                                    now + 13)
    assert await fail(sessions, first) is None
    assert (await task(sessions, first.id)).state == "dispatched_matting"
    async with sessions.begin() as s:
        assert await transitions.record_success(s, Stage.MATTING, second, ok_result(), "b",
                                                now + 14)
    assert (await task(sessions, first.id)).matting_output == "b"


async def test_expired_leases_count_towards_max_retries(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1, retry_count=2)
    now = time.time()
    (c,) = await claim(sessions, Stage.MATTING, 1, now=now, lease=1.0)
    async with sessions.begin() as s:
        await transitions.reclaim_expired(s, now + 2, max_retries=3)
    assert (await task(sessions, c.id)).state == "permanently_failed"


async def test_answer_for_cancelled_job_is_ignored(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 1)
    (c,) = await claim(sessions, Stage.MATTING, 1)
    async with sessions.begin() as s:
        await repo.set_job(s, "j", state="cancelled")
        assert not await transitions.record_success(s, Stage.MATTING, c, ok_result(), "x",
                                                    time.time())
    assert await claim(sessions, Stage.MATTING, 5) == []


async def test_restart_releases_in_flight_tasks_without_counting(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 3)
    await claim(sessions, Stage.MATTING, 2)
    async with sessions.begin() as s:
        assert await transitions.release_dispatched(s) == 2
        counts = await repo.job_counts(s, "j")
    assert counts == {"pending": 3}
    assert len(await claim(sessions, Stage.MATTING, 5)) == 3


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["completed", "completed"], JobState.COMPLETED),
        (["completed", "rejected", "permanently_failed"], JobState.COMPLETED_WITH_ERRORS),
        (["rejected", "permanently_failed"], JobState.FAILED),
        (["completed", "failed"], None),
        (["completed", "matting_done"], None),
    ],
)
async def test_finish_jobs(db: tuple[str, Sessions], states: list[str],
                           expected: JobState | None) -> None:
    _, sessions = db
    async with sessions.begin() as s:
        s.add(Job(id="j", state="running", total=len(states)))
        await s.flush()
        for i, st in enumerate(states):
            s.add(Task(job_id="j", path=f"{i}.jpg", state=st))
    async with sessions.begin() as s:
        done = await transitions.finish_jobs(s, time.time())
    assert [f.state for f in done] == ([expected] if expected else [])
    async with sessions() as s:
        job = await s.get(Job, "j")
        assert job is not None
        assert job.state == (expected.value if expected else "running")
        assert (job.finished_at is not None) == (expected is not None)


async def test_finish_waits_for_all_announced_tasks(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j", 2, state="running", **{})
    async with sessions.begin() as s:
        await repo.set_job(s, "j", total=5)
        for t in await repo.list_tasks(s, "j", None, 10, 0):
            t.state = "completed"
    async with sessions.begin() as s:
        assert await transitions.finish_jobs(s, time.time()) == []


def test_backoff_doubles_and_caps() -> None:
    assert [transitions.backoff_s(n, 1.0, 5.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(0.42, 0.42), (0, 0.0), (1, 1.0), (1.5, None), (-0.1, None), ("0.9", None), (True, None),
     (None, None)],
)
@pytest.mark.parametrize("bulk", [False, True], ids=["record_success", "record_successes"])
async def test_matting_confidence_is_stored_only_when_it_is_one(
    db: tuple[str, Sessions], sent: object, stored: float | None, bulk: bool,
) -> None:
    """Issue 16: the worker's confidence lands on the task (and reaches the comparison claim,
    for the sheet) only as a number in [0, 1]; anything else is stored as none."""
    _, sessions = db
    await add_job(sessions, "j", 1)
    (c,) = await claim(sessions, Stage.MATTING, 1)
    res = ok_result()
    res.extra.update(confidence=sent, fallback={"from": "classical", "model": "tiny"})
    async with sessions.begin() as s:
        if bulk:  # the batched path (STAGE_BATCH_SIZE > 1) stores the same
            assert await tr.record_successes(s, Stage.MATTING, [(c, res, "mo/x.png")],
                                             time.time()) == [True]
        else:
            assert await tr.record_success(s, Stage.MATTING, c, res, "mo/x.png", time.time())
    t = await task(sessions, c.id)
    assert t.confidence == stored and t.fallback == {"from": "classical", "model": "tiny"}
    (c2,) = await claim(sessions, Stage.COMPARISON, 1)
    assert c2.confidence == stored


# --- issue 17: the content-hash cache asks once per batch -------------------------------------
async def test_done_outputs_for_keys_matches_one_key_at_a_time(
        db: tuple[str, Sessions]) -> None:
    """The batched lookup answers, per key, exactly what `done_outputs_for_key` does: the
    newest `limit` matted outputs, none from a cancelled job or a task not matted yet."""
    _, sessions = db
    await add_job(sessions, "live", 8)
    await add_job(sessions, "gone", 2, state=JobState.CANCELLED.value)
    async with sessions.begin() as s:
        rows = (await s.execute(select(Task).order_by(Task.id))).scalars().all()
        for i, t in enumerate(rows):
            t.cache_key = "k1" if i < 6 else "k2"
            t.matting_output = f"matting_output/{t.job_id}/{i}.png"
            t.state = (TaskState.PENDING.value if i == 1
                       else TaskState.COMPLETED.value)
    keys = ["k1", "k2", "none"]
    async with sessions() as s:
        batched = await repo.done_outputs_for_keys(s, [*keys, "k1", ""], limit=3)
        single = {k: await repo.done_outputs_for_key(s, k, limit=3) for k in keys}
    assert batched == {k: v for k, v in single.items() if v}
    assert len(batched["k1"]) == 3  # the limit holds per key
    assert all("gone" not in o for v in batched.values() for o in v)
    async with sessions() as s:
        assert await repo.done_outputs_for_keys(s, []) == {}


async def _plans(tmp_path: Path, seed: Callable[[Sessions], Awaitable[None]],
                 run: Callable[[Sessions], Awaitable[Any]], starts: str
                 ) -> tuple[Any, list[list[str]]]:
    """What `run` returns on a fresh SQLite file that `seed` filled, and the query plan of
    each statement it ran that begins with `starts`, as the gateway gets them: no ANALYZE,
    so SQLite plans from the schema alone."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    await init_db(engine)
    sessions = session_factory(engine)
    await seed(sessions)
    statements: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             many: bool) -> None:
        if statement.lstrip().upper().startswith(starts):
            statements.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", grab)
    try:
        got = await run(sessions)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", grab)
    plans = []
    async with engine.connect() as conn:
        for statement, params in statements:
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                               params)).all()
            plans.append([str(row[-1]) for row in rows])
    await engine.dispose()
    return got, plans


async def test_the_claim_reads_a_queue_off_its_index_without_sorting_it(tmp_path: Path
                                                                        ) -> None:
    """The claim's plan on SQLite as the gateway runs it: the rows updated found by their
    ids, the ids read off `ix_tasks_job_queue` in order, no temporary B-tree. Before (issue
    17) SQLite drove the update from a state index, every queued task of the stage visited
    for each claim (7 ms with 50 000 queued), and without its outer state test it sorted the
    whole queue (47 ms). And what it hands out: the first due tasks by id, a task not yet
    due passed over."""

    async def seed(sessions: Sessions) -> None:
        await add_job(sessions, "big", 300)
        async with sessions.begin() as s:  # a spread of states and a retry not due yet
            await s.execute(update(Task).where(Task.id % 3 == 0).values(state="matting_done"))
            await s.execute(update(Task).where(Task.id == 1)
                            .values(next_attempt_at=time.time() + 3600))

    got, plans = await _plans(tmp_path, seed, lambda ss: claim(ss, Stage.MATTING, 5),
                              "UPDATE TASKS")
    assert sorted(c.id for c in got) == [2, 4, 5, 7, 8]
    assert len(plans) == 1
    assert plans[0][0] == "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)", plans
    assert any("COVERING INDEX ix_tasks_job_queue (job_id=? AND state=?)" in d
               for d in plans[0]), plans
    assert not any("TEMP B-TREE" in d for d in plans[0]), plans


async def test_the_result_cache_looks_up_its_keys_not_every_matted_task(tmp_path: Path
                                                                        ) -> None:
    """The result cache's lookup of a batch's keys (`repo.done_outputs_for_keys`) searches
    `ix_tasks_cache_key_state` by key and state. Before (issue 17) SQLite took a state index
    and read every matted task of every job for each batch: 45 ms with 50 000 matted."""

    async def seed(sessions: Sessions) -> None:
        await add_job(sessions, "done", 200, state="completed")
        async with sessions.begin() as s:
            await s.execute(update(Task).values(state="completed", cache_key="k" + Task.path,
                                                matting_output="out/" + Task.path))

    keys = [f"kimg{i:04d}.jpg" for i in range(190, 222)]  # a batch: 32 keys, 10 known

    async def run(sessions: Sessions) -> dict[str, list[str]]:
        async with sessions() as s:
            return await repo.done_outputs_for_keys(s, keys)

    got, plans = await _plans(tmp_path, seed, run, "SELECT")
    assert got == {f"kimg{i:04d}.jpg": [f"out/img{i:04d}.jpg"] for i in range(190, 200)}
    assert len(plans) == 1
    assert any("INDEX ix_tasks_cache_key_state (cache_key=? AND state=?)" in d
               for d in plans[0]), plans
