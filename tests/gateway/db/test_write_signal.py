"""`Database.write()` tells waiters that something was committed (the live progress streams
sleep on it): a commit bumps `generation` and wakes them, a rolled-back write does neither."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from gateway.db import repo
from gateway.db.database import Database
from shared.settings import Settings


async def test_a_commit_wakes_waiters_and_a_rollback_does_not(tmp_path: Path) -> None:
    db = await Database.connect(Settings(_env_file=None, data_dir=tmp_path).sqlite_url)  # type: ignore[call-arg]
    try:
        seen = db.generation
        waiter = asyncio.create_task(db.wait_for_write(seen, 60.0))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            async with db.write() as s:
                await repo.count_jobs(s)
                raise RuntimeError("rolled back")
        assert db.generation == seen and not waiter.done()
        async with db.write() as s:
            await repo.count_jobs(s)
        assert await waiter == seen + 1 == db.generation
        # a generation already past returns at once; a quiet one after its wait
        assert await db.wait_for_write(seen, 60.0) == seen + 1
        assert await db.wait_for_write(db.generation, 0.01) == seen + 1
    finally:
        await db.close()


async def test_a_job_end_wakes_only_that_jobs_waiters(tmp_path: Path) -> None:
    """`note_jobs_ended` (the scheduler closed jobs) sets the signal its streams hold
    (`job_end_signal`: they cut their read interval short on it); an ordinary write or another
    job's end does not; a signal no one holds any more is dropped."""
    db = await Database.connect(Settings(_env_file=None, data_dir=tmp_path).sqlite_url)  # type: ignore[call-arg]
    try:
        a = db.job_end_signal("a")
        assert db.job_end_signal("a") is a  # one per job, shared by its streams
        b = db.job_end_signal("b")
        async with db.write() as s:  # an ordinary write is no job's end
            await repo.count_jobs(s)
        db.note_jobs_ended(["c"])  # nobody waits for c: nothing to do
        assert not a.is_set() and not b.is_set()
        db.note_jobs_ended(["a"])
        await asyncio.wait_for(a.wait(), 30.0)
        assert not b.is_set()
        del a, b
        gc.collect()
        assert not db._job_ends  # held by no stream: gone
    finally:
        await db.close()
