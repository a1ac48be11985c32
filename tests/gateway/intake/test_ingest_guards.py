"""Ingest against hostile uploads, on real SQLite files and real archives: output names that
two inputs would share, a full disk, a header bomb, and an ingest that keeps dying."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.results.zip_stream import build_zip, zip_chunks
from gateway.state import GatewayState
from shared.settings import Settings
from shared.states import JobState, TaskState
from shared.storage import model_output_rel
from tests.gateway.intake.test_archive_guards import header_bomb
from tests.gateway.intake.test_ingest import Env, archive_bytes, jpeg, png


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    (tmp_path / "data").mkdir()
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'g.db'}")
    yield Env(tmp_path, db)
    await db.close()


async def set_options(env: Env, job_id: str, model: str, output: str) -> None:
    async with env.db.write() as s:
        job = await s.get(Job, job_id)
        assert job is not None
        job.model, job.output = model, output


# --- finding 6: one output name, one input ---------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
async def test_same_stem_second_input_is_rejected(env: Env, tmp_path: Path, kind: str) -> None:
    members = [("p/a.jpg", jpeg(1)), ("p/a.png", png(2)), ("p/b.png", png(3))]
    await env.job("n1", f"s.{kind}", kind, archive_bytes(tmp_path, kind, members))
    job, tasks = await env.run("n1")
    assert job.state == JobState.RUNNING and job.total == 3
    assert tasks["p/a.jpg"].state == TaskState.PENDING
    assert tasks["p/b.png"].state == TaskState.PENDING
    clash = tasks["p/a.png"]
    assert clash.state == TaskState.REJECTED and not clash.input
    assert "p/a.jpg" in (clash.error or "")
    assert not (env.storage.job_chunks("n1") / "p/a.png").exists()


async def test_alpha_output_clash_with_output_both(env: Env, tmp_path: Path) -> None:
    members = [("x.jpg", jpeg(1)), ("x.alpha.jpg", jpeg(2))]
    await env.job("n2", "s.zip", "zip", archive_bytes(tmp_path, "zip", members))
    await set_options(env, "n2", "classical", "both")
    _, tasks = await env.run("n2")
    assert tasks["x.jpg"].state == TaskState.PENDING
    assert tasks["x.alpha.jpg"].state == TaskState.REJECTED
    assert "x.jpg" in (tasks["x.alpha.jpg"].error or "")
    # Without output=both there is no x.alpha.png: both are fine.
    await env.job("n3", "s.zip", "zip", archive_bytes(tmp_path, "zip", members))
    _, tasks = await env.run("n3")
    assert {t.state for t in tasks.values()} == {TaskState.PENDING}


async def test_second_model_output_clash_either_order(env: Env, tmp_path: Path) -> None:
    for job_id, members in (
        ("m1", [("x.jpg", jpeg(1)), ("x.identity.jpg", jpeg(2))]),
        ("m2", [("x.identity.jpg", jpeg(2)), ("x.jpg", jpeg(1))]),
    ):
        await env.job(job_id, "s.zip", "zip", archive_bytes(tmp_path, "zip", members))
        await set_options(env, job_id, "classical,identity", "rgba")
        _, tasks = await env.run(job_id)
        first, second = members[0][0], members[1][0]
        assert tasks[first].state == TaskState.PENDING
        assert tasks[second].state == TaskState.REJECTED
        assert first in (tasks[second].error or "")


async def test_result_zip_never_holds_a_name_twice(env: Env, tmp_path: Path) -> None:
    """The job's outputs are written where the stage workers write them; the download must
    list each name once, and a rejected input gets none of its namesake's files."""
    members = [("a.png", b"not an image"), ("a.jpg", jpeg(1)), ("a.bmp", jpeg(3)[:0] + png(4)),
               ("x.jpg", jpeg(2)), ("x.alpha.jpg", jpeg(5))]  # fmt: skip
    await env.job("z1", "s.zip", "zip", archive_bytes(tmp_path, "zip", members))
    await set_options(env, "z1", "classical", "both")
    _, tasks = await env.run("z1")
    for t in tasks.values():
        if t.state == TaskState.PENDING:
            first = env.storage.matting_rel("z1", t.path)
            for alpha in (False, True):
                target = env.storage.resolve(model_output_rel(first, "classical", 0, alpha))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png(7))
            sheet = env.storage.resolve(env.storage.compare_rel("z1", t.path))
            sheet.parent.mkdir(parents=True, exist_ok=True)
            sheet.write_bytes(jpeg(8))
    async with env.db.read() as s:
        rows = list((await s.scalars(select(Task).where(Task.job_id == "z1")
                                     .order_by(Task.id))).all())  # fmt: skip
    job_zip = build_zip(env.storage, "z1", "both", rows)
    names = zipfile.ZipFile(io.BytesIO(b"".join(zip_chunks(job_zip)))).namelist()
    assert len(names) == len(set(names)), names
    assert "matting_output/a.png" in names and "matting_output/x.alpha.png" in names


# --- finding 7: disk ---------------------------------------------------------------------


@pytest.mark.parametrize("store", ["local", "s3"])
async def test_ingest_fails_before_min_free_disk_and_cleans_up(
    tmp_path: Path, request: pytest.FixtureRequest, store: str
) -> None:
    (tmp_path / "data").mkdir()
    free = shutil.disk_usage(tmp_path).free
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'd.db'}")
    # On S3 the same floor guards the local scratch each member passes through.
    s3 = (request.getfixturevalue("s3_settings").model_copy(update={"min_free_disk": free})
          if store == "s3" else None)
    env = Env(tmp_path, db, s3, min_free_disk=free)  # a real check against the real free space
    members = [(f"p/{i}.png", png(i)) for i in range(5)]
    await env.job("d1", "s.tar.gz", "tar.gz", archive_bytes(tmp_path, "tar.gz", members))
    job, tasks = await env.run("d1")
    await db.close()
    assert job.state == JobState.FAILED and "disk" in (job.error or "")
    assert "MIN_FREE_DISK" in (job.error or "") and tasks == {}
    assert not env.storage.job_chunks("d1").exists()
    assert list(env.storage.objects.list("input/d1/")) == []  # the upload went too


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
async def test_small_bombs_fail_the_job(any_env: Env, tmp_path: Path, kind: str) -> None:
    from tests.gateway.intake.test_archive_guards import small_bombs

    env = any_env  # the same refusal when the archive is read from its object on S3
    upload = small_bombs(tmp_path / f"b.{kind}", kind)
    await env.job("r1", f"b.{kind}", kind, upload.read_bytes())
    job, tasks = await env.run("r1")
    assert job.state == JobState.FAILED and "times its own size" in (job.error or "")
    assert tasks == {} and not env.storage.job_chunks("r1").exists()
    assert list(env.storage.objects.list("input/r1/")) == []


# --- finding 1: header bomb and crash loops ----------------------------------------------


async def test_header_bomb_fails_the_job_clearly(env: Env, tmp_path: Path) -> None:
    upload = header_bomb(tmp_path / "bomb.tar.gz", b"L", 64 << 20)
    await env.job("h1", "bomb.tar.gz", "tar.gz", upload.read_bytes())
    job, tasks = await env.run("h1")
    assert job.state == JobState.FAILED and tasks == {}
    assert "GNU long-name header of 67108864 bytes" in (job.error or "")


async def open_gateway(root: Path) -> GatewayState:
    return await GatewayState.open(Settings(data_dir=root / "data", max_retries=3))


async def test_recover_gives_up_after_max_retries(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    env_db = await Database.connect(Settings(data_dir=tmp_path / "data").sqlite_url)
    env = Env(tmp_path, env_db)
    await env.job("c1", "s.zip", "zip", archive_bytes(tmp_path, "zip", [("a.png", png(1))]),
                  state=JobState.INGESTING)  # fmt: skip
    await env.job("c2", "s.zip", "zip", archive_bytes(tmp_path, "zip", [("a.png", png(1))]),
                  state=JobState.INGESTING)  # fmt: skip
    async with env.db.write() as s:
        for job_id, attempts in (("c1", 3), ("c2", 2)):
            job = await s.get(Job, job_id)
            assert job is not None
            job.ingest_attempts = attempts
    await env_db.close()
    gw = await open_gateway(tmp_path)
    try:
        await gw.recover()
        assert set(gw.ingests) == {"c2"}
        await asyncio.gather(*gw.ingests.values())
        async with gw.db.read() as s:
            c1, c2 = await s.get(Job, "c1"), await s.get(Job, "c2")
        assert c1 is not None and c2 is not None
        assert c1.state == JobState.FAILED and c1.error is not None
        assert "ingest crashed 3 times" in c1.error
        assert not gw.storage.job_input("c1").exists()
        assert c2.state == JobState.RUNNING and c2.ingest_attempts == 3
    finally:
        await gw.close()


ROOT = Path(__file__).resolve().parents[3]
KILLED_ROUND = """
import asyncio, os, signal, sys
from pathlib import Path
import gateway.intake.ingest
from gateway.db.tables import Job
from gateway.state import GatewayState
from shared.settings import Settings

gateway.intake.ingest.INSERT_BATCH = 1

async def main() -> None:
    gw = await GatewayState.open(Settings(data_dir=Path(sys.argv[1]), max_retries=3))
    await gw.recover()
    if "k1" not in gw.ingests:
        print("not restarted", flush=True)
        os._exit(0)
    while True:  # until this attempt has inserted rows: it is under way
        async with gw.db.read() as s:
            job = await s.get(Job, "k1")
        if job is not None and job.total >= 1:
            break
        await asyncio.sleep(0.01)
    print("killed mid-ingest", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""
"""One gateway life: recover, let the restarted ingest begin, then die by SIGKILL (as a gateway
killed for memory by a bomb would)."""


async def test_an_ingest_killed_every_time_is_not_restarted_for_ever(tmp_path: Path) -> None:
    """Each round is a real gateway process killed mid-ingest, then a new one on the same
    database file, as after a restart by Supervisor."""
    (tmp_path / "data").mkdir()
    env_db = await Database.connect(Settings(data_dir=tmp_path / "data").sqlite_url)
    env = Env(tmp_path, env_db)
    members = [(f"p/{i}.png", png(i)) for i in range(200)]
    await env.job("k1", "s.zip", "zip", archive_bytes(tmp_path, "zip", members),
                  state=JobState.INGESTING)  # fmt: skip
    await env_db.close()
    restarts = 0
    for _ in range(10):
        r = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", KILLED_ROUND, str(tmp_path / "data")],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=120)
        if "not restarted" in r.stdout:
            break
        assert r.returncode == -signal.SIGKILL and "killed mid-ingest" in r.stdout, r.stderr
        restarts += 1
    assert restarts == 3
    gw = await open_gateway(tmp_path)
    async with gw.db.read() as s:
        job = await s.get(Job, "k1")
    await gw.close()
    assert job is not None and job.state == JobState.FAILED
    assert "ingest crashed 3 times" in (job.error or "")


async def test_old_database_file_gets_the_new_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE jobs (id VARCHAR(32) PRIMARY KEY, state VARCHAR(32), "
                "filename VARCHAR(1024), upload_path VARCHAR(1024), model VARCHAR(512), "
                "output VARCHAR(16), callback_url VARCHAR(2048), api_key_hash VARCHAR(64), "
                "total INTEGER, error TEXT, created_at FLOAT, updated_at FLOAT, "
                "started_at FLOAT, finished_at FLOAT, callback_done BOOLEAN)")
    con.execute("INSERT INTO jobs (id, state, total) VALUES ('old', 'ingesting', 0)")
    con.commit()
    con.close()
    for _ in range(2):  # idempotent
        db = await Database.connect(f"sqlite+aiosqlite:///{path}")
        async with db.read() as s:
            job = await s.get(Job, "old")
        await db.close()
        assert job is not None and job.ingest_attempts == 0
