"""The scheduler's maintenance on Postgres with several gateways: a dead gateway's leases go
back to their queues at once, a live one's are left alone (real Postgres, real locks)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.db.locks import GATEWAY_LOCK_SPACE, lock_key
from gateway.db.tables import Job, Task
from gateway.pipeline.scheduler import Scheduler
from shared.stages import Stage
from shared.storage import Storage
from tests.support.gateway import make_settings
from tests.support.postgres import PostgresServer, fresh_database_url, postgres_server

__all__ = ["postgres_server"]


async def test_a_dead_gateways_leases_are_released_a_live_ones_kept(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    url = fresh_database_url(postgres_server)
    me = await Database.connect(url)
    alive = await Database.connect(url)  # another gateway, holding its id's lock
    assert await alive.chores.take(lock_key(GATEWAY_LOCK_SPACE, "gw-alive"))
    async with me.write() as s:
        s.add(Job(id="j", state="running", total=9, created_at=time.time()))
        await s.flush()
        await repo.insert_tasks(s, [{"job_id": "j", "path": f"{i}.jpg", "input": f"in/{i}"}
                                    for i in range(9)])
    for by in ("gw-dead", "gw-alive", "gw-me"):
        async with me.write() as s:
            await transitions.claim(s, Stage.MATTING, 3, time.time(), 600.0, by=by)
    settings = make_settings(tmp_path, database_url=url, gateway_id="gw-me")
    scheduler = Scheduler(settings, me, Storage(tmp_path / "data"))
    try:
        assert await scheduler.release_dead_gateways() == 3
        assert await scheduler.release_dead_gateways() == 0  # nothing left of it
        async with me.read() as s:
            rows = (await s.execute(select(Task.state, Task.dispatched_by))).all()
        leased = sorted(by for st, by in rows if st == "dispatched_matting")
        assert leased == ["gw-alive"] * 3 + ["gw-me"] * 3
        await alive.close()  # now that one dies too
        assert await scheduler.release_dead_gateways() == 3
    finally:
        await me.close()
