"""Several gateways on one Postgres (issue 13): each `Database` object below stands for one
gateway process (its own engines, pool and write lock), all on one real database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text

from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.db.locks import Chore
from gateway.db.tables import Job, Task, task_counts
from shared.stages import Stage
from shared.states import TaskState
from tests.support.postgres import PostgresServer, fresh_database_url

Gateways = tuple[Database, Database]


@pytest.fixture
async def gateways(postgres_server: PostgresServer) -> AsyncIterator[Gateways]:
    url = fresh_database_url(postgres_server)
    a = await Database.connect(url)
    b = await Database.connect(url)  # migrating an up-to-date database changes nothing
    yield a, b
    await a.close()
    await b.close()


async def add_job(db: Database, job_id: str, n: int) -> None:
    async with db.write() as s:
        s.add(Job(id=job_id, state="running", total=n, created_at=time.time()))
        await s.flush()
        await repo.insert_tasks(s, [{"job_id": job_id, "path": f"{i:05d}.jpg",
                                     "input": f"in/{i}.jpg"} for i in range(n)])


async def claim(db: Database, n: int, by: str) -> list[transitions.Claimed]:
    async with db.write() as s:
        return await transitions.claim(s, Stage.MATTING, n, time.time(), 60.0, by=by)


async def test_two_gateways_never_claim_one_task_twice(gateways: Gateways) -> None:
    a, b = gateways
    await add_job(a, "j1", 150)
    await add_job(b, "j2", 150)
    got: dict[str, list[int]] = {"a": [], "b": []}
    both_in = asyncio.Barrier(2)  # each claims once before either goes on: they compete

    async def gateway(db: Database, name: str) -> None:
        first = True
        while batch := await claim(db, (name == "a" and 7) or 11, name):
            got[name] += [c.id for c in batch]
            if first:
                first = False
                await both_in.wait()
            await asyncio.sleep(0.002)

    await asyncio.gather(gateway(a, "a"), gateway(b, "b"))
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 300
    assert got["a"] and got["b"]  # both made progress
    async with a.read() as s:
        rows = (await s.execute(select(Task.id, Task.state, Task.dispatched_by))).all()
    assert {st for _, st, _ in rows} == {TaskState.DISPATCHED_MATTING.value}
    assert {i for i, _, by in rows if by == "a"} == set(got["a"])
    async with a.read() as s:
        counts = await repo.job_counts(s, "j1")
    assert counts == {TaskState.DISPATCHED_MATTING.value: 150}


async def test_a_restarting_gateway_releases_only_its_own_leases(gateways: Gateways) -> None:
    a, b = gateways
    await add_job(a, "j", 10)
    mine = await claim(a, 4, "gw-a")
    theirs = await claim(b, 3, "gw-b")
    async with a.write() as s:
        assert await transitions.release_dispatched(s, by="gw-a") == 4
    async with b.read() as s:
        state = {i: st for i, st in (await s.execute(select(Task.id, Task.state))).all()}
    assert all(state[c.id] == TaskState.PENDING.value for c in mine)
    assert all(state[c.id] == TaskState.DISPATCHED_MATTING.value for c in theirs)
    # the other gateway's answers still land: their leases were left alone
    async with b.write() as s:
        assert await transitions.release(s, Stage.MATTING, theirs[0], time.time())


async def test_one_gateway_runs_a_chore_and_another_takes_over_when_it_dies(
    gateways: Gateways,
) -> None:
    a, b = gateways
    assert await a.chores.holds(Chore.MAINTENANCE)
    assert not await b.chores.holds(Chore.MAINTENANCE)
    assert await b.chores.holds(Chore.WEBHOOKS)  # one key per chore
    assert not await a.chores.holds(Chore.WEBHOOKS)
    assert await a.chores.holds(Chore.MAINTENANCE)  # kept while it lives
    await a.chores.close()  # as a dead process's connection closes
    assert await b.chores.holds(Chore.MAINTENANCE)


async def test_a_dropped_lock_connection_gives_the_chores_up(
    gateways: Gateways, postgres_server: PostgresServer,
) -> None:
    a, b = gateways
    assert await a.chores.holds(Chore.REPORTS)
    async with b.write() as s:  # the server ends a's lock session (a crash, a failover)
        await s.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                             "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"))
    assert not await a.chores.holds(Chore.REPORTS)  # noticed: never run it unlocked
    assert await b.chores.holds(Chore.REPORTS)


async def test_counter_deltas_fold_without_changing_a_count(gateways: Gateways) -> None:
    a, b = gateways
    await add_job(a, "j", 20)
    for db, by in ((a, "a"), (b, "b"), (a, "a")):
        await claim(db, 3, by)
    await add_job(a, "gone", 5)
    async with b.write() as s:
        await repo.delete_job(s, "gone")
    async with a.read() as s:
        before = await repo.job_counts(s, "j")
        rows_before = await s.scalar(select(func.count()).select_from(task_counts))
    async with a.write() as s:
        await repo.compact_counts(s)
    async with a.read() as s:
        assert await repo.job_counts(s, "j") == before
        assert await repo.job_counts(s, "gone") == {}
        rows = (await s.execute(select(task_counts.c.job_id, task_counts.c.state))).all()
    assert sorted(rows) == [("j", "dispatched_matting"), ("j", "pending")]
    assert rows_before is not None and rows_before > len(rows)
    assert before == {"pending": 11, "dispatched_matting": 9}


async def test_two_gateways_closing_jobs_agree(gateways: Gateways) -> None:
    a, b = gateways
    await add_job(a, "j", 2)
    async with a.write() as s:
        await s.execute(Task.__table__.update().values(state=TaskState.COMPLETED.value))
    finished = await asyncio.gather(*(_finish(db) for db in (a, b)))
    assert sorted(len(f) for f in finished) in ([0, 1], [1, 1])
    async with b.read() as s:
        job = await s.get(Job, "j")
    assert job is not None and job.state == "completed"


async def _finish(db: Database) -> list[transitions.FinishedJob]:
    async with db.write() as s:
        return await transitions.finish_jobs(s, time.time())
