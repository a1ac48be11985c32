"""A database made before the webhook columns existed gets them at start-up, once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.db.database import Database


async def test_old_jobs_table_gets_the_callback_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the jobs table as it was, with a row in it
        conn.execute("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, state VARCHAR(32), "
                     "callback_url VARCHAR(2048), callback_done BOOLEAN)")
        conn.execute("INSERT INTO jobs VALUES ('old', 'completed', 'https://e.com/', 0)")
    url = f"sqlite+aiosqlite:///{path}"
    for _ in range(2):  # idempotent: a second start-up adds nothing and fails on nothing
        db = await Database.connect(url)
        await db.close()
    with sqlite3.connect(path) as conn:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
        row = conn.execute("SELECT callback_attempts, callback_error FROM jobs").fetchone()
    assert {"callback_attempts", "callback_error"} <= cols
    assert row == (0, None)
