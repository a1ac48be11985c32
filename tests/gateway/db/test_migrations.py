"""Alembic migrations (gateway/db/migrations): an empty database migrated to head matches
tables.py exactly, on SQLite and on Postgres; a pre-Alembic SQLite file is adopted."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from gateway.db.tables import Base, create_engine, include_name, init_db

HEAD = "0005"


def _diff(conn: Connection) -> list[Any]:
    mc = MigrationContext.configure(conn, opts={"include_name": include_name,
                                                "compare_type": True})
    return list(compare_metadata(mc, Base.metadata))


async def _head(url: str) -> tuple[list[Any], str]:
    engine = create_engine(url)
    try:
        await init_db(engine)
        await init_db(engine)  # a second start migrates nothing
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))
                       ).scalar_one()
    finally:
        await engine.dispose()
    return diff, str(version)


def _old_task(con: sqlite3.Connection, job_state: str, task_state: str) -> None:
    """Job `old` with one task `a.png`, as an older revision's rows."""
    con.execute("INSERT INTO jobs (id, state, filename, upload_path, model, output, total,"
                " created_at, updated_at, callback_done) VALUES "
                "('old', ?, '', '', 'classical', 'rgba', 1, 1, 1, 1)", (job_state,))
    con.execute("INSERT INTO tasks (job_id, path, input, state, retry_count, "
                "next_attempt_at, queued_at, updated_at) VALUES "
                "('old', 'a.png', 'a.png', ?, 0, 0, 1, 1)", (task_state,))


async def test_an_empty_database_migrated_to_head_is_tables_py(database_url: str) -> None:
    diff, version = await _head(database_url)
    assert diff == []
    assert version == HEAD


async def test_a_database_from_before_alembic_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await _head(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as con:  # as create_all left it: no version, no new column
        con.execute("DROP TABLE alembic_version")
        con.execute("DROP INDEX ix_jobs_created")
        con.execute("ALTER TABLE tasks DROP COLUMN dispatched_by")
        con.execute("DROP TABLE upload_parts")
        con.execute("ALTER TABLE uploads DROP COLUMN multipart_id")
        con.execute("INSERT INTO jobs (id, state, filename, upload_path, model, output, total,"
                    " created_at, updated_at, callback_done) VALUES "
                    "('old', 'completed', '', '', 'classical', 'rgba', 0, 1, 1, 1)")
    diff, version = await _head(f"sqlite+aiosqlite:///{path}")
    assert diff == [] and version == HEAD
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT id FROM jobs").fetchall() == [("old",)]


async def test_a_0003_database_gets_the_output_size_columns_its_rows_left_unrecorded(
        tmp_path: Path) -> None:
    """Revision 0004 (issue 17, the download): the three columns are added to a database of
    0003 with rows in it; those rows keep NULL (their job's zip is sized by `stat`)."""
    path = tmp_path / "v3.db"
    await _head(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as con:  # as revision 0003 left it, with a finished job
        for column in ("output_files", "output_bytes", "output_name_bytes"):
            con.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
        con.execute("UPDATE alembic_version SET version_num = '0003'")
        _old_task(con, "completed", "completed")
    diff, version = await _head(f"sqlite+aiosqlite:///{path}")
    assert diff == [] and version == HEAD
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT path, output_files, output_bytes, output_name_bytes "
                           "FROM tasks").fetchall() == [("a.png", None, None, None)]


async def test_a_0004_database_gets_the_planned_indexes_in_place_of_the_old_ones(
        tmp_path: Path) -> None:
    """Revision 0005 (issue 17, the claim and the result cache): `ix_tasks_job_queue` and
    `ix_tasks_cache_key_state` replace `ix_tasks_job_state` and `ix_tasks_cache_key` in a
    database of 0004, its rows kept."""
    path = tmp_path / "v4.db"
    await _head(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as con:  # as revision 0004 left it, with a task
        con.execute("DROP INDEX ix_tasks_job_queue")
        con.execute("CREATE INDEX ix_tasks_job_state ON tasks (job_id, state)")
        con.execute("DROP INDEX ix_tasks_cache_key_state")
        con.execute("CREATE INDEX ix_tasks_cache_key ON tasks (cache_key)")
        con.execute("UPDATE alembic_version SET version_num = '0004'")
        _old_task(con, "running", "pending")
    diff, version = await _head(f"sqlite+aiosqlite:///{path}")
    assert diff == [] and version == HEAD
    with sqlite3.connect(path) as con:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'index' AND tbl_name = 'tasks'")}
        assert {"ix_tasks_job_queue", "ix_tasks_cache_key_state"} <= names
        assert not {"ix_tasks_job_state", "ix_tasks_cache_key"} & names
        assert con.execute("SELECT path, state FROM tasks").fetchall() == [("a.png",
                                                                            "pending")]
