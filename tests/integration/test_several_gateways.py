"""Several gateways on one Postgres (issue 13, "Past one machine"): the real stack with two
gateway processes sharing the task database, the workers and the balancers.

- Either gateway serves every job: status, the task list, the page, the live events, the
  download (by HTTP and by the CLI), tus.
- One gateway is SIGKILLed while it holds dispatched tasks of a job and stays dead: the other
  one sees it gone and takes its tasks back at once (long before their lease would run out),
  finishes the job, and every image is in the download exactly once.

The kill runs with the jobs' files in the DATA_DIR both gateways share and with them in S3
(SeaweedFS on loopback), where no image file may land in DATA_DIR at all; the serving checks
run on S3, where a tus upload begun on one gateway is one multipart upload the other finishes.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient import client as tus_client
from typer.testing import CliRunner

from mattepipe.cli.main import app
from shared.settings import Settings
from tests.integration.test_faults import assert_each_once, progressed
from tests.support.images import make_zip, noise_set
from tests.support.postgres import PostgresServer, fresh_database_url, postgres_server
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.scale, pytest.mark.timeout(900)]

__all__ = ["postgres_server"]  # the fixture, imported for this module's tests

IMAGES = 60
SIDE = 256  # noise at this size keeps a worker busy for tens of ms a batch: polls see it
LEASE_S = 600.0
"""Longer than the test waits for the job (`Stack.wait_final`, 240 s): the dead gateway's
leases must come back because it is gone (its GATEWAY_ID lock is free), not by expiring."""


@contextmanager
def two_gateways(request: pytest.FixtureRequest, storage: str, data: Path) -> Iterator[Stack]:
    """The stack with two gateways on a fresh Postgres database; `storage` "s3": the jobs'
    files in a fresh prefix of the SeaweedFS bucket (the AWS_* variables set for the test),
    "local": in the DATA_DIR the two gateways share."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    objects: dict[str, Any] = {}
    if storage == "s3":
        s3: Settings = request.getfixturevalue("s3_settings")
        objects = {"storage_url": s3.storage_url, "s3_endpoint_url": s3.s3_endpoint_url}
    with running_stack(
        data,
        gateways=2,
        database_url=fresh_database_url(server),
        default_model="identity",
        matting_workers=2,
        comparison_workers=2,
        max_batch_size=4,
        stage_batch_size=4,
        matting_concurrency=8,
        comparison_concurrency=4,
        lease_s=LEASE_S,
        **objects,
    ) as s:
        yield s


def upload(c: httpx.Client, members: dict[str, bytes]) -> str:
    r = c.post("/upload", content=make_zip(members), headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def counts(c: httpx.Client, job_id: str) -> dict[str, int]:
    try:
        return dict(c.get(f"/status/{job_id}").json().get("counts", {}))
    except (httpx.TransportError, ValueError):
        return {}


async def _held(url: str, job_id: str) -> dict[str, int]:
    import asyncpg  # the driver the gateway uses; a plain connection for the check

    con = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await con.fetch(
            "SELECT CASE WHEN state LIKE 'dispatched%' THEN dispatched_by ELSE state END, "
            "count(*) FROM tasks WHERE job_id = $1 GROUP BY 1", job_id)
    finally:
        await con.close()
    return {str(r[0]): int(r[1]) for r in rows}


def held(stack: Stack, job_id: str) -> dict[str, int]:
    """The job's tasks: those in a dispatched state counted by the gateway that dispatched
    them, the others by state (one query, so a poll sees one moment)."""
    assert stack.settings.database_url
    return asyncio.run(_held(stack.settings.database_url, job_id))


def test_either_gateway_serves_every_job(request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    with two_gateways(request, "s3", tmp_path / "data") as stack:
        either_gateway_serves_every_job(stack, tmp_path)


def either_gateway_serves_every_job(stack: Stack, tmp_path: Path) -> None:
    members = noise_set(6, 64)
    with stack.gateway(1) as one, stack.gateway(2) as two:
        job_id = upload(one, members)
        st = stack.wait_final(job_id)
        assert st["state"] == "completed", st
        for c in (one, two):
            assert c.get(f"/status/{job_id}").json()["completed"] == len(members)
            rows = c.get(f"/jobs/{job_id}/tasks").json()["tasks"]
            assert sorted(t["path"] for t in rows) == sorted(members)
            assert job_id in {j["job_id"] for j in c.get("/jobs").json()["jobs"]}
            assert c.get("/").status_code == 200
            with c.stream("GET", f"/jobs/{job_id}/events") as ev:
                first = next(line for line in ev.iter_lines() if line.startswith("data:"))
            assert job_id in first and "completed" in first
        # the download from the gateway that did not take the upload, by HTTP and by the CLI
        r = two.get(f"/download/{job_id}")
        assert r.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        assert len([n for n in names if n.startswith("matting_output/")]) == len(members)
        cli = {"MATTEPIPE_SERVER": stack.gateways[1], "COLUMNS": "200"}
        done = CliRunner().invoke(app, ["wait", job_id, "-o", str(tmp_path / "cli.zip")],
                                  env=cli)
        assert done.exit_code == 0, done.output
        assert sorted(zipfile.ZipFile(tmp_path / "cli.zip").namelist()) == sorted(names)

        # a tus upload begun on one gateway and finished on the other becomes a job on either
        src = tmp_path / "photos.zip"
        src.write_bytes(make_zip(noise_set(3, 200)))
        chunk = 64 * 1024
        assert src.stat().st_size > 3 * chunk
        first_half = tus_client.TusClient(stack.gateways[0] + "/files/").uploader(
            file_path=str(src), chunk_size=chunk, metadata={"filename": "photos.zip"})
        first_half.upload_chunk()
        assert first_half.url is not None
        upload_id = first_half.url.rsplit("/", 1)[-1]
        rest = tus_client.TusClient(stack.gateways[1] + "/files/").uploader(
            file_path=str(src), url=f"{stack.gateways[1]}/files/{upload_id}", chunk_size=chunk)
        assert rest.offset == chunk
        rest.upload()
        r = one.post("/jobs", json={"upload_id": upload_id})
        assert r.status_code == 202, r.text
        assert two.post("/jobs", json={"upload_id": upload_id}).status_code == 409
        st = stack.wait_final(r.json()["job_id"])
        assert st["state"] == "completed" and st["total"] == 3, st


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_gateway_killed_mid_job_the_other_finishes_it(request: pytest.FixtureRequest,
                                                       storage: str, tmp_path: Path) -> None:
    with two_gateways(request, storage, tmp_path / "data") as stack:
        gateway_killed_mid_job(stack)
    if storage == "s3":  # every file was an object: none of the job's landed in DATA_DIR
        assert not [p for p in (tmp_path / "data").rglob("*.png")]


def gateway_killed_mid_job(stack: Stack) -> None:
    members = noise_set(IMAGES, SIDE)
    with stack.gateway(2) as two:
        job_id = upload(two, members)
    names = {"gateway-1": "gateway", "gateway-2": "gateway-2"}  # GATEWAY_ID → program

    def a_gateway_holds_work_of_a_half_done_job() -> tuple[str, dict[str, int]] | None:
        now = held(stack, job_id)
        holder = next((g for g in names if now.get(g)), None)
        return (holder, now) if holder and progressed(now) else None

    victim, before = wait_for(a_gateway_holds_work_of_a_half_done_job, 300,
                              "a gateway holding tasks of a half-done job", interval=0.01)
    stack.kill(names[victim])
    # it stays dead (Supervisor restarts no gateway of a multi-gateway stack): the other one
    # alone finishes the job, taking the dead one's tasks back as soon as it sees it gone
    wait_for(lambda: stack.pid(names[victim]) == 0, 30, f"{victim} seen dead by Supervisor")
    survivor = stack.gateways[1] if victim == "gateway-1" else stack.gateways[0]
    assert_each_once(replace(stack, url=survivor), job_id, members)
    assert held(stack, job_id) == {"completed": len(members)}
    print(f"\ntasks when {victim} was killed: {before}; the other gateway finished the job")
