"""`Database.write()` tells waiters that something was committed (the live progress streams
sleep on it): a commit bumps `generation` and wakes them, a rolled-back write does neither."""

from __future__ import annotations

import asyncio
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


async def test_a_job_end_wakes_its_waiters(tmp_path: Path) -> None:
    """`note_job_ended` (the scheduler closed a job) wakes `wait_for_job_end`, which the live
    progress streams use to cut their read interval short; a count already past returns at
    once."""
    db = await Database.connect(Settings(_env_file=None, data_dir=tmp_path).sqlite_url)  # type: ignore[call-arg]
    try:
        seen = db.jobs_ended
        waiter = asyncio.create_task(db.wait_for_job_end(seen, 3600.0))
        await asyncio.sleep(0)
        async with db.write() as s:  # an ordinary write is no job's end
            await repo.count_jobs(s)
        await asyncio.sleep(0.05)
        assert not waiter.done()
        db.note_job_ended()
        await asyncio.wait_for(waiter, 30.0)
        assert db.jobs_ended == seen + 1
        await asyncio.wait_for(db.wait_for_job_end(seen, 3600.0), 30.0)
    finally:
        await db.close()
