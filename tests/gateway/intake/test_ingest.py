import asyncio
import errno
import io
import tarfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

import gateway.intake.ingest
from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.intake.ingest import ingest_job
from shared.settings import Settings
from shared.states import JobState, TaskState
from shared.storage import Storage


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 8), (seed, 50, 100)).save(buf, "PNG")
    return buf.getvalue()


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (seed, 90, 10)).save(buf, "JPEG")
    return buf.getvalue()


TREE: list[tuple[str, bytes]] = [
    ("photos/a/x.jpg", jpeg(1)),
    ("photos/b/y.png", png(2)),
    ("photos/c/deep/z.jpg", jpeg(3)),
    ("photos/corrupt.jpg", jpeg(4)[:50]),
    ("photos/notes.txt", b"not an image"),
    ("gt/a/x.png", png(11)),
    ("gt/b/y.png", png(12)),
    ("gt/orphan.png", png(13)),
    ("__MACOSX/photos/._x.jpg", b"junk"),
]


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)


def write_tgz(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


class Env:
    def __init__(self, root: Path, db: Database, settings: Settings | None = None,
                 **limits: Any) -> None:
        self.settings = settings or Settings(data_dir=root / "data", **limits)
        self.storage = Storage.from_settings(self.settings)
        self.storage.ensure_layout()
        self.db = db

    async def job(
        self,
        job_id: str,
        filename: str,
        ext: str,
        data: bytes,
        state: JobState = JobState.UPLOADING,
    ) -> Path:
        upload = self.storage.job_input(job_id) / f"upload.{ext}"
        if self.storage.is_local:
            upload.parent.mkdir(parents=True, exist_ok=True)
            upload.write_bytes(data)
        else:  # on S3: only the object, as a tus upload or another gateway's POST /upload
            self.storage.objects.put(f"input/{job_id}/upload.{ext}", data)
        async with self.db.write() as s:
            s.add(
                Job(
                    id=job_id,
                    state=state.value,
                    filename=filename,
                    upload_path=f"input/{job_id}/upload.{ext}",
                )
            )
        return upload

    async def run(self, job_id: str) -> tuple[Job, dict[str, Task]]:
        await ingest_job(job_id, self.db, self.storage, self.settings)
        async with self.db.read() as s:
            job = await s.get(Job, job_id)
            tasks = (await s.scalars(select(Task).where(Task.job_id == job_id))).all()
        assert job is not None
        return job, {t.path: t for t in tasks}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    (tmp_path / "data").mkdir()
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'test.db'}")
    yield Env(tmp_path, db)
    await db.close()


def archive_bytes(tmp_path: Path, kind: str, members: list[tuple[str, bytes]]) -> bytes:
    path = tmp_path / f"a.{kind}"
    (write_zip if kind == "zip" else write_tgz)(path, members)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
async def test_tree_with_gt_and_bad_files(any_env: Env, tmp_path: Path, kind: str) -> None:
    env = any_env
    upload = await env.job("j1", f"set.{kind}", kind, archive_bytes(tmp_path, kind, TREE))
    job, tasks = await env.run("j1")
    assert job.state == JobState.RUNNING and job.error is None
    assert job.total == 5 == len(tasks)
    assert set(tasks) == {
        "photos/a/x.jpg",
        "photos/b/y.png",
        "photos/c/deep/z.jpg",
        "photos/corrupt.jpg",
        "photos/notes.txt",
    }
    for path, data in TREE[:3]:
        t = tasks[path]
        assert t.state == TaskState.PENDING and t.error is None
        assert t.input == f"input/j1/chunks/{path}"
        assert env.storage.objects.get(t.input) == data
        assert t.cache_key and len(t.cache_key) == 64  # hashed before the batch left, on S3
    for bad in ("photos/corrupt.jpg", "photos/notes.txt"):
        assert tasks[bad].state == TaskState.REJECTED and tasks[bad].error and not tasks[bad].input
    assert tasks["photos/a/x.jpg"].gt == "input/j1/chunks/gt/a/x.png"
    assert tasks["photos/b/y.png"].gt == "input/j1/chunks/gt/b/y.png"
    assert env.storage.objects.get(tasks["photos/b/y.png"].gt or "") == png(12)
    assert tasks["photos/c/deep/z.jpg"].gt is None
    assert not upload.exists()  # the archive is gone, the extracted files stay
    assert not env.storage.objects.exists(f"input/j1/upload.{kind}")
    assert not env.storage.objects.exists("input/j1/chunks/photos/corrupt.jpg")


async def test_rerun_after_crash_starts_clean(env: Env, tmp_path: Path) -> None:
    await env.job(
        "j2", "set.zip", "zip", archive_bytes(tmp_path, "zip", TREE), state=JobState.INGESTING
    )
    stale = env.storage.job_chunks("j2") / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(png(1))
    async with env.db.write() as s:
        s.add(Task(job_id="j2", path="photos/a/x.jpg", input="input/j2/chunks/old.jpg"))
    job, tasks = await env.run("j2")
    assert job.state == JobState.RUNNING and job.total == 5
    async with env.db.read() as s:
        rows = (await s.scalars(select(Task).where(Task.job_id == "j2"))).all()
    assert len(rows) == 5  # the dead attempt's row is gone, no duplicates
    assert not stale.exists()
    # A job that is already running is left alone by a second call.
    job, tasks = await env.run("j2")
    assert job.state == JobState.RUNNING and len(tasks) == 5


async def test_truncated_archive_keeps_what_was_read(env: Env, tmp_path: Path) -> None:
    members = [(f"p/{i}.png", png(i)) for i in range(30)]
    data = archive_bytes(tmp_path, "tar.gz", members)
    await env.job("j3", "set.tgz", "tar.gz", data[: len(data) * 2 // 3])
    job, tasks = await env.run("j3")
    assert job.state == JobState.RUNNING
    assert job.error and "corrupt archive" in job.error
    assert 0 < len(tasks) < 30 and job.total == len(tasks)


@pytest.mark.parametrize(
    ("members", "needle"),
    [([], "archive holds no images"), ([("gt/x.png", png(1))], "archive holds no images")],
)
async def test_archives_without_images_fail(
    env: Env, tmp_path: Path, members: list[tuple[str, bytes]], needle: str
) -> None:
    upload = await env.job("j4", "e.zip", "zip", archive_bytes(tmp_path, "zip", members))
    job, tasks = await env.run("j4")
    assert job.state == JobState.FAILED and job.error == needle and tasks == {}
    assert not upload.exists() and not env.storage.job_chunks("j4").exists()


async def test_not_an_archive_fails(env: Env) -> None:
    await env.job("j5", "x.zip", "zip", b"this is plain text")
    job, _ = await env.run("j5")
    assert job.state == JobState.FAILED and "not an archive" in (job.error or "")


async def test_limits_fail_the_whole_job(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'l.db'}")
    env = Env(tmp_path, db, max_archive_members=2)
    await env.job("j6", "s.zip", "zip", archive_bytes(tmp_path, "zip", TREE))
    job, tasks = await env.run("j6")
    await db.close()
    assert job.state == JobState.FAILED and "more than 2 members" in (job.error or "")
    assert tasks == {} and not env.storage.job_chunks("j6").exists()


async def test_all_rejected_is_completed_with_errors(env: Env, tmp_path: Path) -> None:
    data = archive_bytes(tmp_path, "zip", [("a.txt", b"text"), ("b.jpg", b"\xff\xd8\xffbad")])
    await env.job("j7", "s.zip", "zip", data)
    job, tasks = await env.run("j7")
    assert job.state == JobState.COMPLETED_WITH_ERRORS and job.total == 2
    assert {t.state for t in tasks.values()} == {TaskState.REJECTED}


async def test_single_image(env: Env) -> None:
    upload = await env.job("j8", "Cat photo.JPG", "jpg", jpeg(5))
    job, tasks = await env.run("j8")
    assert job.state == JobState.RUNNING and list(tasks) == ["Cat photo.JPG"]
    assert env.storage.resolve(tasks["Cat photo.JPG"].input).read_bytes() == jpeg(5)
    assert not upload.exists()


async def test_cancelled_job_is_left_alone(env: Env, tmp_path: Path) -> None:
    await env.job(
        "j9", "s.zip", "zip", archive_bytes(tmp_path, "zip", TREE), state=JobState.CANCELLED
    )
    job, tasks = await env.run("j9")
    assert job.state == JobState.CANCELLED and tasks == {}
    assert not env.storage.job_chunks("j9").exists()


async def test_cancel_during_ingest_stops_it(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.intake.ingest, "INSERT_BATCH", 1)
    members = [(f"p/{i}.png", png(i % 200)) for i in range(300)]
    await env.job("jc", "s.zip", "zip", archive_bytes(tmp_path, "zip", members))
    runner = asyncio.create_task(ingest_job("jc", env.db, env.storage, env.settings))
    while not runner.done():
        async with env.db.write() as s:
            job = await s.get(Job, "jc")
            assert job is not None
            if job.total >= 3:
                job.state = JobState.CANCELLED.value
                break
        await asyncio.sleep(0)
    await runner
    job, tasks = await env.run("jc")
    assert job.state == JobState.CANCELLED
    assert 3 <= len(tasks) < 300
    assert not env.storage.job_input("jc").exists()


async def test_an_unexpected_failure_shows_its_kind_not_its_paths(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An I/O error the intake has no answer for (injected where the unpacking runs): its text
    # names an absolute path inside DATA_DIR, which must stay in the gateway's log.
    await env.job("j8", "t.zip", "zip", archive_bytes(tmp_path, "zip", TREE))
    where = str(env.storage.job_chunks("j8") / "a.png")

    async def failing_extract(*args: Any, **kw: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error", where)

    monkeypatch.setattr(gateway.intake.ingest, "_extract", failing_extract)
    job, tasks = await env.run("j8")
    assert job.state == JobState.FAILED and tasks == {}
    assert job.error == "ingest failed (OSError); see the gateway's log"
    assert str(env.settings.data_dir) not in (job.error or "")
