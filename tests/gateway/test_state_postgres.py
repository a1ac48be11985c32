"""The gateway on Postgres (issue 13): the whole API over a real Postgres database, two
gateways serving one job, and a dead gateway's upload and ingest taken over by exactly one
live gateway (`GatewayState.take_over_jobs`)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.locks import JOB_LOCK_SPACE, lock_key
from gateway.db.tables import Task
from gateway.state import GatewayState
from shared.storage import Storage
from tests.support.gateway import Gateway, StageServer, make_settings
from tests.support.images import zip_of_images
from tests.support.postgres import PostgresServer, fresh_database_url, postgres_server
from tests.support.waiting import wait_for

__all__ = ["postgres_server"]

Start = Callable[..., Gateway]


def _upload(gw: Gateway, names: list[str]) -> dict[str, str]:
    r = gw.client.post("/upload?filename=set.zip&output=rgba", content=zip_of_images(names),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    doc: dict[str, str] = r.json()
    return doc


def test_upload_to_download_on_postgres(start_gateway: Start, stage_server: StageServer,
                                        postgres_server: PostgresServer) -> None:
    gw = start_gateway(stage_server.url, database_url=fresh_database_url(postgres_server))
    doc = _upload(gw, ["one.jpg", "dir/two.jpg", "three.png"])
    wait_for(lambda: gw.client.get(doc["status_url"]).json()["state"]
             not in ("ingesting", "running"))
    s = gw.client.get(doc["status_url"]).json()
    assert s["state"] == "completed" and s["total"] == 3 and s["completed"] == 3, s
    assert s["stages"]["matting"]["done"] == 3
    zf = zipfile.ZipFile(io.BytesIO(gw.client.get(doc["download_url"]).content))
    assert {"matting_output/one.png", "final_results/dir/two_compare.jpg"} <= set(zf.namelist())
    listed = gw.client.get("/jobs").json()
    assert listed["total"] == 1 and listed["jobs"][0]["job_id"] == doc["job_id"]
    tasks = gw.client.get(f"/jobs/{doc['job_id']}/tasks").json()["tasks"]
    assert sorted(t["path"] for t in tasks) == ["dir/two.jpg", "one.jpg", "three.png"]


def test_two_gateways_serve_one_job(start_gateway: Start, stage_server: StageServer,
                                    postgres_server: PostgresServer) -> None:
    url = fresh_database_url(postgres_server)
    a = start_gateway(stage_server.url, database_url=url, gateway_id="gw-a")
    b = start_gateway(stage_server.url, database_url=url, gateway_id="gw-b")
    doc = _upload(a, [f"img{i:02d}.jpg" for i in range(12)])
    wait_for(lambda: b.client.get(doc["status_url"]).json()["state"] == "completed")
    assert a.client.get(doc["status_url"]).json()["completed"] == 12
    assert b.client.get(doc["download_url"]).status_code == 200
    tasks = b.client.get(f"/jobs/{doc['job_id']}/tasks?limit=100").json()["tasks"]
    assert len(tasks) == 12 and {t["state"] for t in tasks} == {"completed"}


async def test_two_live_gateways_may_not_share_an_id(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    url = fresh_database_url(postgres_server)
    first, second = [await GatewayState.open(make_settings(tmp_path / "data", database_url=url,
                                                           gateway_id="same"))
                     for _ in range(2)]
    try:
        await first.claim_gateway_id()
        with pytest.raises(RuntimeError, match="GATEWAY_ID 'same' is in use"):
            await second.claim_gateway_id()
    finally:
        await first.close()
        await second.close()


async def _ingesting_job(db: Database, storage: Storage, job_id: str, names: list[str]) -> None:
    upload = storage.job_input(job_id) / "upload.zip"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(zip_of_images(names))
    async with db.write() as s:
        await repo.create_job(s, job_id, state="ingesting", filename="set.zip",
                              upload_path=storage.relative(upload))


async def _tasks(db: Database, job_id: str) -> int:
    async with db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(Task)
                                  .where(Task.job_id == job_id)) or 0)


async def test_a_dead_gateways_jobs_are_taken_over_once(
    postgres_server: PostgresServer, tmp_path: Path,
) -> None:
    url = fresh_database_url(postgres_server)
    data = tmp_path / "data"
    dead = await Database.connect(url)  # the gateway that received the jobs
    live = [await GatewayState.open(make_settings(data, database_url=url, gateway_id=f"gw{i}"))
            for i in range(2)]
    storage = live[0].storage
    try:
        await _ingesting_job(dead, storage, "ing", ["a.jpg", "b.jpg", "c.jpg"])
        async with dead.write() as s:
            await repo.create_job(s, "cut", state="uploading")
        storage.job_input("cut").mkdir(parents=True)
        (storage.job_input("cut") / "upload.zip").write_bytes(b"PK half")
        for job_id in ("ing", "cut"):
            assert await dead.chores.take(lock_key(JOB_LOCK_SPACE, job_id))

        await asyncio.gather(*(g.take_over_jobs() for g in live))  # its gateway is alive
        async with dead.read() as s:
            job = await repo.get_job(s, "ing")
            assert job is not None and job.state == "ingesting" and job.ingest_attempts == 0
            assert await repo.get_job(s, "cut") is not None

        await dead.close()  # the gateway dies: Postgres drops its locks with its connections
        await asyncio.gather(*(g.take_over_jobs() for g in live))
        await asyncio.gather(*(t for g in live for t in list(g.ingests.values())))
        async with live[1].db.read() as s:
            job = await repo.get_job(s, "ing")
            assert job is not None and job.state == "running" and job.total == 3
            assert job.ingest_attempts == 1  # redone once, by one gateway
            assert await repo.get_job(s, "cut") is None
            assert await repo.job_counts(s, "ing") == {"pending": 3}
        assert await _tasks(live[0].db, "ing") == 3
        assert not storage.job_input("cut").exists()
        assert not any(g.held_jobs for g in live)  # the lock is given back after the ingest
    finally:
        for g in live:
            await g.close()
