"""The trigger-kept task counters and keyset paging, on a real SQLite file and a real Postgres
database (`database_url`; on Postgres the counters are delta rows, folded by
`repo.compact_counts`).

The counters must equal a GROUP BY over the rows after any mix of transitions (claims,
answers, failures, reclaims, deletes), and a database from before them gets them counted once
at start-up. Keyset pages (`after`) never repeat or skip a task while tasks change state.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db import repo
from gateway.db import transitions as tr
from gateway.db.tables import TASK_COUNTS, Task, create_engine, init_db, session_factory
from shared.stages import Stage
from shared.states import TaskState
from tests.gateway.db.test_repo import add_job, claim, ok_result

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[tuple[str, Sessions]]:
    engine = create_engine(database_url)
    await init_db(engine)
    yield database_url, session_factory(engine)
    await engine.dispose()


async def truth(sessions: Sessions, job_id: str) -> dict[str, int]:
    async with sessions() as s:
        q = select(Task.state, func.count()).where(Task.job_id == job_id).group_by(Task.state)
        return {st: int(n) for st, n in (await s.execute(q)).all()}


async def counted(sessions: Sessions, job_id: str) -> dict[str, int]:
    async with sessions() as s:
        return await repo.job_counts(s, job_id)


async def test_counters_follow_every_transition(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "j1", 60)
    await add_job(sessions, "j2", 7)
    assert await counted(sessions, "j1") == {"pending": 60} == await truth(sessions, "j1")
    rng = random.Random(7)
    now = time.time()
    for round_ in range(6):
        for stage in Stage:
            got = await claim(sessions, stage, rng.randint(1, 15), now=now)
            async with sessions.begin() as s:
                for c in got:
                    pick = rng.random()
                    if pick < 0.6:
                        await tr.record_success(s, stage, c, ok_result(), "out.png", now)
                    elif pick < 0.8:
                        await tr.record_failure(s, stage, c, "boom", retryable=True, now=now,
                                                max_retries=3, backoff_base=0.0,
                                                backoff_max=0.0)
                    elif pick < 0.9:
                        await tr.release(s, stage, c, now)
                    # else: left leased, for the reclaim below
        now += 100.0
        async with sessions.begin() as s:
            await tr.requeue_due(s, now)
            await tr.reclaim_expired(s, now, 3)
        assert await counted(sessions, "j1") == await truth(sessions, "j1"), round_
        if round_ == 2:  # the deltas folded mid-way (Postgres; nothing on SQLite)
            async with sessions.begin() as s:
                await repo.compact_counts(s)
    assert await counted(sessions, "j2") == await truth(sessions, "j2")
    done = (await truth(sessions, "j1")).get(TaskState.COMPLETED.value, 0)
    async with sessions() as s:
        assert await repo.count_tasks(s, "j1", None) == 60
        assert await repo.count_tasks(s, "j1", TaskState.COMPLETED.value) == done
        tasks, _ = await repo.global_counts(s)
    assert sum(tasks.values()) == 67
    async with sessions.begin() as s:
        await repo.delete_job(s, "j1")
    assert await counted(sessions, "j1") == {}
    assert await counted(sessions, "j2") == await truth(sessions, "j2")
    async with sessions.begin() as s:
        await repo.compact_counts(s)
    assert await counted(sessions, "j1") == {}
    assert await counted(sessions, "j2") == await truth(sessions, "j2")


async def test_an_older_database_gets_its_counters_at_start_up(tmp_path: Path) -> None:
    """Rows written before the counters existed are counted once by `init_db`."""
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await init_db(engine)
    sessions = session_factory(engine)
    await add_job(sessions, "old", 25)
    await engine.dispose()
    with sqlite3.connect(path) as con:  # as an older version left it: no counters at all
        for name in ("tasks_count_insert", "tasks_count_update", "tasks_count_delete"):
            con.execute(f"DROP TRIGGER {name}")
        con.execute(f"DROP TABLE {TASK_COUNTS}")
        con.execute("DROP TABLE alembic_version")  # nor migrations (`adopt_legacy`)
        con.execute("UPDATE tasks SET state = 'completed' WHERE id <= 5")
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await init_db(engine)
    await init_db(engine)  # idempotent: a second start-up counts nothing twice
    sessions = session_factory(engine)
    assert await counted(sessions, "old") == {"pending": 20, "completed": 5}
    await engine.dispose()


async def test_keyset_pages_cover_every_task_once_while_states_change(
    db: tuple[str, Sessions],
) -> None:
    _, sessions = db
    await add_job(sessions, "k", 250)
    await add_job(sessions, "other", 40)
    seen: list[int] = []
    after: int | None = None
    now = time.time()
    while True:
        async with sessions() as s:
            page = await repo.list_tasks(s, "k", None, 37, 0, after)
        seen += [t.id for t in page]
        # between pages, tasks move on: claims and answers must not shift the pages
        got = await claim(sessions, Stage.MATTING, 20, now=now)
        async with sessions.begin() as s:
            for c in got:
                await tr.record_success(s, Stage.MATTING, c, ok_result(), "o.png", now)
        if len(page) < 37:
            break
        after = page[-1].id
    async with sessions() as s:
        every = [t.id for t in await repo.list_tasks(s, "k", None, 1000, 0)]
    assert seen == every and len(seen) == 250 and len(set(seen)) == 250


async def test_keyset_pages_of_one_state(db: tuple[str, Sessions]) -> None:
    _, sessions = db
    await add_job(sessions, "s", 30)
    async with sessions.begin() as s:
        await s.execute(update(Task).where(Task.id % 3 == 0)
                        .values(state=TaskState.COMPLETED.value))
    pages, after = [], None
    while True:
        async with sessions() as s:
            page = await repo.list_tasks(s, "s", TaskState.COMPLETED.value, 4, 0, after)
        if not page:
            break
        pages.append([t.id for t in page])
        after = page[-1].id
    flat = [i for p in pages for i in p]
    assert flat == sorted(flat) and len(flat) == 10 and all(i % 3 == 0 for i in flat)
