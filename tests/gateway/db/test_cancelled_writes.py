"""A write cancelled in the middle (a job's ingest when the job is cancelled, the scheduler at
shutdown) leaves no lock behind on SQLite: its transaction is rolled back and the next write
commits at once, however long the cancelled task's frames stay alive."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text

from gateway.db import repo
from gateway.db.database import Database

NEXT_WRITE_S = 5.0
"""Far under SQLITE_BUSY_TIMEOUT_MS (30 s), which a left lock would make the next write wait."""


async def test_a_write_cancelled_between_execute_and_fetch_leaves_no_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
    try:
        async with db.write() as s:
            before = await repo.count_jobs(s)
        fetchall = aiosqlite.Cursor.fetchall
        cut = asyncio.Event()

        async def cancelled_before_fetch(cursor: aiosqlite.Cursor) -> Any:
            # the task is cancelled once its SELECT ran and before its rows are fetched,
            # where a cancel() that lands as the statement's answer arrives takes effect
            if not cut.is_set():
                cut.set()
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                await asyncio.sleep(0)
            return await fetchall(cursor)

        monkeypatch.setattr(aiosqlite.Cursor, "fetchall", cancelled_before_fetch)

        async def ingest_like() -> None:
            async with db.write() as s:
                await repo.count_jobs(s)
                await repo.create_job(s, "never")

        writer = asyncio.create_task(ingest_like())
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await writer
        assert cut.is_set()
        monkeypatch.undo()
        # the cancelled task's frames are still alive (held here as the event loop and the
        # exception's cycles hold them until a garbage collection): the next write must not
        # wait for them
        async with asyncio.timeout(NEXT_WRITE_S):
            async with db.write() as s:
                await repo.create_job(s, "next")
        async with db.read() as s:
            ids = (await s.execute(text("SELECT id FROM jobs ORDER BY id"))).scalars().all()
        assert ids == ["next"] and before == 0  # the cancelled insert was rolled back
        assert cancelled.value.__traceback__ is not None
    finally:
        await db.close()
