"""The task database's tests run on both dialects: a real SQLite file and a real Postgres
(a throwaway cluster on loopback, `tests.support.postgres`; skipped with the reason when
Postgres cannot be had)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.postgres import fresh_database_url, postgres_server

__all__ = ["database_url", "postgres_server"]

DIALECTS = ["sqlite", "postgres"]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new empty database's URL: a SQLite file, or a database on the test cluster."""
    if request.param == "postgres":
        return fresh_database_url(request.getfixturevalue("postgres_server"))
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
