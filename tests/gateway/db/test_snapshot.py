"""`Database.snapshot`: the one-hop reads of `/status`, task pages and the zip's and report's
walk, on a real SQLite file (a blocking read-only connection in its own threads) and a real
Postgres (the async read engine), against the same rows the async queries see."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Job, Task
from shared.limits import SNAPSHOT_THREADS


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    d = await Database.connect(database_url)
    yield d
    await d.close()


async def add_job(db: Database, job_id: str, n: int, owner: str | None = None) -> None:
    async with db.write() as s:
        s.add(Job(id=job_id, state="running", total=n, created_at=time.time(),
                  api_key_hash=owner))
        await s.flush()
        await repo.insert_tasks(s, [
            {"job_id": job_id, "path": f"d{i % 3}/img{i:04d}.png",
             "input": f"input/{job_id}/{i}.png", "state": "completed" if i % 4 else "pending"}
            for i in range(n)])


async def test_snapshot_reads_what_the_async_queries_read(db: Database) -> None:
    await add_job(db, "j1", 250, owner="k1")
    async with db.read() as s:
        want_job = await repo.get_job(s, "j1", owner="k1")
        want_counts = await repo.job_counts(s, "j1")
        want_page = await repo.list_tasks(s, "j1", "completed", 20, 0, after=100)
        want_total = await repo.count_tasks(s, "j1", "completed")
        want_report = await repo.report_page(s, "j1", ("d1/img0100.png", 0), 30)

    def read(s: Session) -> tuple[Job | None, Job | None, dict[str, int], list[Task], int,
                                  list[Task]]:
        return (repo.job_sync(s, "j1", "k1"), repo.job_sync(s, "j1", "other key"),
                repo.job_counts_sync(s, "j1"),
                repo.list_tasks_sync(s, "j1", "completed", 20, 0, after=100),
                repo.count_tasks_sync(s, "j1", "completed"),
                repo.report_page_sync(s, "j1", ("d1/img0100.png", 0), 30))

    job, foreign, counts, page, total, report = await db.snapshot(read)
    assert want_job is not None and job is not None and job.id == want_job.id == "j1"
    assert foreign is None  # another tenant's job is not there, as with get_job
    assert counts == want_counts == {"completed": 187, "pending": 63}
    assert [t.id for t in page] == [t.id for t in want_page] and len(page) == 20
    assert all(t.id > 100 for t in page) and total == want_total == 187
    assert [t.path for t in report] == [t.path for t in want_report]
    # the rows come back loaded: usable after the snapshot's transaction has ended
    assert page[0].path.endswith(".png") and page[0].state == "completed"


async def test_a_snapshot_sees_each_commit(db: Database) -> None:
    await add_job(db, "j2", 3)
    count = functools.partial(repo.count_tasks_sync, job_id="j2", state=None)
    assert await db.snapshot(count) == 3
    async with db.write() as s:
        await repo.insert_tasks(s, [{"job_id": "j2", "path": "x.png", "input": "input/j2/x"}])
    assert await db.snapshot(count) == 4


async def test_a_snapshot_keeps_no_write(db: Database) -> None:
    """SQLite: the reader connections are `query_only`, a write fails; Postgres: the read
    session is never committed, a write is rolled back. Either way the rows stay."""
    await add_job(db, "j3", 1)

    def write(s: Session) -> None:
        s.execute(text("DELETE FROM tasks"))

    if db.postgres:
        await db.snapshot(write)
    else:
        with pytest.raises(OperationalError, match="readonly"):
            await db.snapshot(write)
    assert await db.snapshot(functools.partial(repo.count_tasks_sync, job_id="j3",
                                               state=None)) == 1


async def test_sqlite_snapshots_run_off_the_event_loop_and_beside_a_writer(
    db: Database,
) -> None:
    if db.postgres:
        pytest.skip("the reader threads are SQLite's; Postgres reads on its async engine")
    await add_job(db, "j4", 10)
    loop_thread = threading.get_ident()
    ran_in = await db.snapshot(lambda _s: threading.get_ident())
    assert ran_in != loop_thread
    # a write transaction holds the lock (and SQLite's write lock) while snapshots read
    async with db.write() as w:
        await repo.insert_tasks(w, [{"job_id": "j4", "path": "y.png", "input": "input/j4/y"}])
        assert db.writing
        seen = await asyncio.wait_for(db.snapshot(functools.partial(
            repo.count_tasks_sync, job_id="j4", state=None)), 30)
        assert seen == 10  # the snapshot sees the last commit, not the open write
    assert await db.snapshot(functools.partial(repo.count_tasks_sync, job_id="j4",
                                               state=None)) == 11


async def test_a_snapshot_here_runs_in_the_calling_thread_on_sqlite_only(db: Database) -> None:
    """`snapshot_here`: the same read transaction, blocking, in the thread that asks (a
    download's zip thread reading its next page); SQLite only, Postgres says so."""
    if db.postgres:
        assert not db.blocking_snapshots
        return
    assert db.blocking_snapshots
    await add_job(db, "j7", 5)
    count = functools.partial(repo.count_tasks_sync, job_id="j7", state=None)

    def here() -> tuple[int, int, int]:
        ran_in, got = db.snapshot_here(lambda s: (threading.get_ident(), count(s)))
        return threading.get_ident(), ran_in, got

    caller, ran_in, got = await asyncio.to_thread(here)
    assert got == 5
    assert ran_in == caller != threading.get_ident()  # the asking thread, not the loop's


async def test_many_more_snapshots_than_threads_all_finish(db: Database) -> None:
    """The reader pool is bounded (SNAPSHOT_THREADS threads, as many connections): a burst of
    polls queues for it instead of opening a connection each, and none is lost."""
    await add_job(db, "j5", 40)
    n = SNAPSHOT_THREADS * 25
    got = await asyncio.wait_for(asyncio.gather(*(
        db.snapshot(functools.partial(repo.job_counts_sync, job_id="j5")) for _ in range(n))),
        120)
    assert got == [{"completed": 30, "pending": 10}] * n


async def test_a_failing_snapshot_leaves_the_pool_usable(db: Database) -> None:
    await add_job(db, "j6", 2)

    def boom(_s: Session) -> None:
        raise ValueError("in the middle of a read")

    for _ in range(SNAPSHOT_THREADS * 2):
        with pytest.raises(ValueError, match="middle of a read"):
            await db.snapshot(boom)
    assert await db.snapshot(functools.partial(repo.count_tasks_sync, job_id="j6",
                                               state=None)) == 2
