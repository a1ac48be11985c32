"""The last quota slot, raced for by two gateways on one real Postgres: each `Database` is
one gateway (its own pool and write lock), so only the per-key advisory lock can keep the
second racer from counting before the first one's job is committed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.db import repo
from gateway.db.database import Database
from gateway.errors import PayloadTooLarge, QuotaExceeded
from gateway.intake.quotas import enforce_quota, enforce_upload_limits
from tests.support.gateway import make_settings
from tests.support.postgres import PostgresServer, fresh_database_url, postgres_server

__all__ = ["postgres_server"]

WIDEN_S = 0.3
"""A pause between the check and the insert, so that without the lock both racers would
pass the check (the window a slow disk or a busy machine opens anyway)."""


async def _race(dbs: list[Database], attempt: object) -> list[BaseException | None]:
    barrier = asyncio.Barrier(len(dbs))

    async def one(i: int, db: Database) -> BaseException | None:
        await barrier.wait()
        try:
            await attempt(i, db)  # type: ignore[operator]
        except (QuotaExceeded, PayloadTooLarge) as exc:
            return exc
        return None

    return list(await asyncio.gather(*(one(i, db) for i, db in enumerate(dbs))))


async def test_two_gateways_racing_for_the_last_job_slot(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    url = fresh_database_url(postgres_server)
    dbs = [await Database.connect(url) for _ in range(2)]
    settings = make_settings(tmp_path, max_concurrent_jobs=1)

    async def create(i: int, db: Database) -> None:
        async with db.write() as s:
            await enforce_quota(s, "key", settings)
            await asyncio.sleep(WIDEN_S)
            await repo.create_job(s, f"job{i}", state="running", api_key_hash="key")

    outcomes = await _race(dbs, create)
    try:
        assert sorted(o is None for o in outcomes) == [False, True]  # exactly one got it
        assert any(isinstance(o, QuotaExceeded) for o in outcomes)
        async with dbs[0].read() as s:
            assert await repo.count_jobs(s, owner="key") == 1
        # another key is not held up by this one's lock
        async with dbs[1].write() as s:
            await enforce_quota(s, "other", settings)
    finally:
        for db in dbs:
            await db.close()


@pytest.mark.parametrize("limit", ["count", "bytes"])
async def test_two_gateways_racing_for_the_last_open_upload(
    postgres_server: PostgresServer, tmp_path: Path, limit: str,
) -> None:
    url = fresh_database_url(postgres_server)
    dbs = [await Database.connect(url) for _ in range(2)]
    settings = make_settings(tmp_path, max_open_uploads=1 if limit == "count" else 0,
                             max_open_upload_bytes=0 if limit == "count" else 3 * 2**40)

    async def create(i: int, db: Database) -> None:
        size = 2 * 2**40  # 2 TiB declared: past 2^31, a 64-bit column
        async with db.write() as s:
            await enforce_upload_limits(s, "key", size, settings)
            await asyncio.sleep(WIDEN_S)
            await repo.add_upload(s, f"up{i}", length=size, api_key_hash="key",
                                  expires_at=time.time() + 3600)

    outcomes = await _race(dbs, create)
    try:
        assert sorted(o is None for o in outcomes) == [False, True]
        async with dbs[0].read() as s:
            assert await repo.open_uploads(s, "key", time.time()) == (1, 2 * 2**40)
    finally:
        for db in dbs:
            await db.close()
