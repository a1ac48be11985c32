"""Fixtures of the intake tests: `any_env`, the ingest environment on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.db.database import Database
from tests.gateway.intake.test_ingest import Env


@pytest.fixture(params=["local", "s3"])
async def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """`env` on the local DATA_DIR and on S3 (SeaweedFS): the same assertions hold on both."""
    (tmp_path / "data").mkdir()
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'test.db'}")
    settings = request.getfixturevalue("s3_settings") if request.param == "s3" else None
    yield Env(tmp_path, db, settings)
    await db.close()


