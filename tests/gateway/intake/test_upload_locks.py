"""One tus upload served by two gateways on one real Postgres: each `Database` is one gateway
(its own lock connection), and `UploadLocks` makes a PATCH on one and a PATCH on the other
take turns, as two PATCHes on one gateway always did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.db.database import Database
from gateway.intake.tus_store import UploadBusy, UploadLocks
from tests.support.postgres import PostgresServer, fresh_database_url, postgres_server

__all__ = ["postgres_server"]


@pytest.fixture
async def two_gateways(postgres_server: PostgresServer) -> AsyncIterator[tuple[Database, ...]]:
    url = fresh_database_url(postgres_server)
    a, b = await Database.connect(url), await Database.connect(url)
    yield a, b
    await a.close()
    await b.close()


async def test_two_gateways_take_turns_on_one_upload(two_gateways: tuple[Database, ...]) -> None:
    a, b = (UploadLocks(db.chores) for db in two_gateways)
    order: list[str] = []
    async with a.hold("u1", 0.0):
        order.append("a in")
        with pytest.raises(UploadBusy):  # the other gateway's PATCH: busy, not interleaved
            async with b.hold("u1", 0.2):
                order.append("b in while a holds")
        async with b.hold("u2", 0.0):  # another upload is not held up
            order.append("b on u2")

        async def b_waits() -> None:
            async with b.hold("u1", 30.0):
                order.append("b in")

        waiting = asyncio.create_task(b_waits())
        await asyncio.sleep(0.3)  # b is polling for the lock a still holds
        order.append("a out")
    await asyncio.wait_for(waiting, 30)
    assert order == ["a in", "b on u2", "a out", "b in"]
    async with a.hold("u1", 0.0):  # and b gave it back
        pass


async def test_one_gateway_on_sqlite_needs_no_database_lock(tmp_path: Path) -> None:
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        locks = UploadLocks(db.chores)
        async with locks.hold("u1", 0.0):
            with pytest.raises(UploadBusy):  # the in-process lock still serialises
                async with locks.hold("u1", 0.05):
                    pass
    finally:
        await db.close()
