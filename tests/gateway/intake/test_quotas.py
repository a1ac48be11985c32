"""Per-key job quotas: counted from a real SQLite jobs table, enforced by the real app."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.auth import key_hash
from gateway.db.tables import Job, create_engine, init_db, session_factory
from gateway.intake.quotas import check_quota
from shared.settings import Settings
from tests.support.gateway import Gateway, make_settings, seed

Sessions = async_sessionmaker[AsyncSession]
Start = Callable[..., Gateway]
NOW = 1_700_000_000.0
KEY = key_hash("k3y")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await init_db(engine)
    yield session_factory(engine)
    await engine.dispose()


async def add_jobs(
    db: Sessions, ages: list[float], state: str = "completed", key: str | None = KEY
) -> None:
    async with db.begin() as s:
        for age in ages:
            s.add(Job(id=_id(), state=state, api_key_hash=key, created_at=NOW - age))


_counter = iter(range(10**9))


def _id() -> str:
    return f"job{next(_counter):08d}"


def limits(tmp_path: Path, concurrent: int = 0, hour: int = 0, day: int = 0) -> Settings:
    return make_settings(
        tmp_path, max_concurrent_jobs=concurrent, max_jobs_per_hour=hour, max_jobs_per_day=day
    )


async def verdict(db: Sessions, settings: Settings, key: str | None = KEY) -> Any:
    async with db() as s:
        return await check_quota(s, key, settings, now=NOW)


async def test_concurrent_counts_only_active_jobs_of_the_key(db: Sessions, tmp_path: Path) -> None:
    s = limits(tmp_path, concurrent=3)
    await add_jobs(db, [10, 20], state="running")
    await add_jobs(db, [30, 40, 50, 60], state="completed")
    await add_jobs(db, [5, 6, 7], state="running", key=key_hash("other"))
    await add_jobs(db, [5, 6, 7], state="running", key=None)
    assert await verdict(db, s) is None
    await add_jobs(db, [1], state="ingesting")
    over = await verdict(db, s)
    assert over is not None and over.retry_after == 30
    assert "3 allowed" in over.detail
    # The anonymous caller is one key of its own: its three running jobs fill its quota too.
    assert await verdict(db, s, key=None) is not None
    assert await verdict(db, s, key=key_hash("nobody")) is None


async def test_hourly_window_and_retry_after(db: Sessions, tmp_path: Path) -> None:
    s = limits(tmp_path, hour=3)
    await add_jobs(db, [3500, 3000, 7200, 90000])  # two in the last hour
    assert await verdict(db, s) is None
    await add_jobs(db, [10])
    over = await verdict(db, s)
    assert over is not None and "3 jobs per hour" in over.detail
    assert over.retry_after == 100  # the oldest of the hour (3500 s ago) leaves in 100 s
    # Over the limit by two (the limit was lowered): the second oldest must leave too.
    over = await verdict(db, limits(tmp_path, hour=2))
    assert over is not None and over.retry_after == 600


async def test_daily_window_and_zero_means_no_limit(db: Sessions, tmp_path: Path) -> None:
    await add_jobs(db, [80000, 50000, 4000], state="cancelled")  # cancelled still counts
    over = await verdict(db, limits(tmp_path, hour=5, day=3))
    assert over is not None and "per day" in over.detail
    assert over.retry_after == 86400 - 80000
    assert await verdict(db, limits(tmp_path, hour=5, day=4)) is None
    assert await verdict(db, limits(tmp_path)) is None


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def upload(c: httpx.Client, key: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "image/png"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return c.post("/upload", content=png(), headers=headers)


def test_app_answers_429_with_retry_after_per_hour(start_gateway: Start) -> None:
    # No stage answers (port 9), so every job stays running: only the hourly limit bites here.
    gw = start_gateway(api_key="k3y", max_concurrent_jobs=0, max_jobs_per_hour=2)
    assert [upload(gw.client, "k3y").status_code for _ in range(2)] == [202, 202]
    r = upload(gw.client, "k3y")
    assert r.status_code == 429
    assert "2 jobs per hour" in r.json()["detail"]
    assert 3590 <= int(r.headers["retry-after"]) <= 3600
    assert upload(gw.client).status_code == 401  # the key is checked before the quota
    assert gw.client.get("/jobs", headers={"Authorization": "Bearer k3y"}).json()["total"] == 2


def test_counts_survive_a_restart(data_dir: Path, start_gateway: Start) -> None:
    """Quotas come from the jobs table: jobs recorded before this gateway started count."""
    settings = make_settings(data_dir)
    now = time.time()
    seed(
        settings,
        [
            {
                "id": f"old{i}",
                "state": "completed",
                "created_at": now - 600 - i,
                "api_key_hash": None,
            }
            for i in range(3)
        ],
        [],
    )
    gw = start_gateway(max_jobs_per_hour=4, max_concurrent_jobs=0)
    assert upload(gw.client).status_code == 202
    r = upload(gw.client)
    assert r.status_code == 429
    assert 2990 - 5 <= int(r.headers["retry-after"]) <= 3000 - 2  # old2 leaves first


def test_racing_uploads_never_share_a_slot(start_gateway: Start) -> None:
    gw = start_gateway(max_concurrent_jobs=2)
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: upload(gw.client).status_code, range(8)))
    assert codes == [202, 202] + [429] * 6
    r = upload(gw.client)
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert "running at once" in r.json()["detail"]
    # Cancelling a job frees its concurrent slot (not its hourly one).
    job = gw.client.get("/jobs").json()["jobs"][0]["job_id"]
    assert gw.client.delete(f"/jobs/{job}").status_code == 200
    assert upload(gw.client).status_code == 202
