"""A job is closed by the answer that ends its last task, in the same transaction (issue 14,
point 2: closing it at the next maintenance pass left the machine idle up to
MAINTENANCE_INTERVAL_S after the work); the maintenance pass then runs at once (the report,
the webhook). Real scheduler, real stage server over HTTP, real SQLite file; the maintenance
interval here is an hour, so only the writer can have closed the job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.pipeline.scheduler import Scheduler
from shared.storage import Storage
from tests.support.gateway import FAST, StageServer, image_tasks, job_when, make_settings
from tests.support.waiting import async_wait_for

HOUR = 3600.0


async def _run(data_dir: Path, stage_server: StageServer, paths: list[str],
               until: Any, **settings: Any) -> tuple[Job, list[Task], Scheduler]:
    cfg = make_settings(data_dir, stage_server.url, **settings)
    db = await Database.open(cfg)
    storage = Storage(data_dir)
    async with db.write() as s:
        s.add(Job(id="job1", state="running", total=len(paths)))
        await s.flush()
        for row in image_tasks(storage, "job1", paths):
            s.add(Task(**row))
    sched = Scheduler(cfg, db, storage, None, **{**FAST, "maintenance_s": HOUR})
    ended = db.job_end_signal("job1")  # as a live progress stream holds it
    await sched.start()
    try:
        job, tasks = await async_wait_for(
            lambda: job_when(db, "job1", lambda j: until(j, storage)),
            what="the job's end", interval=0.05)
    finally:
        await sched.stop()
        await db.close()
    assert ended.is_set()  # its streams were told
    return job, tasks, sched


def _closed(job: Job, storage: Storage) -> bool:
    return job.state != "running"


async def test_the_last_answer_closes_the_job(data_dir: Path,
                                              stage_server: StageServer) -> None:
    job, tasks, _ = await _run(data_dir, stage_server, [f"d/{i}.jpg" for i in range(5)],
                               _closed, stage_batch_size=2, matting_concurrency=4,
                               comparison_concurrency=4)
    assert job.state == "completed" and len(tasks) == 5
    assert all(t.state == "completed" for t in tasks)
    assert job.finished_at is not None
    assert job.finished_at >= max(t.completed_at or 0.0 for t in tasks)


async def test_a_last_task_failing_for_good_closes_it_with_errors(
        data_dir: Path, stage_server: StageServer) -> None:
    stage_server.by_input["bad.jpg"] = ["fatal"]
    job, tasks, _ = await _run(data_dir, stage_server, ["a.jpg", "bad.jpg"], _closed)
    assert job.state == "completed_with_errors"
    assert {t.path: t.state for t in tasks} == {"a.jpg": "completed",
                                                "bad.jpg": "permanently_failed"}


async def test_every_task_failing_closes_it_failed(data_dir: Path,
                                                   stage_server: StageServer) -> None:
    stage_server.by_input["bad.jpg"] = ["fatal"]
    job, _, _ = await _run(data_dir, stage_server, ["bad.jpg"], _closed)
    assert job.state == "failed" and job.error == "no image completed"


async def test_a_job_still_being_ingested_stays_open(data_dir: Path,
                                                     stage_server: StageServer) -> None:
    """Every task created so far is done, but `total` says more are coming: not closed."""
    cfg = make_settings(data_dir, stage_server.url)
    db = await Database.open(cfg)
    storage = Storage(data_dir)
    async with db.write() as s:
        s.add(Job(id="job1", state="running", total=3))
        await s.flush()
        for row in image_tasks(storage, "job1", ["a.jpg", "b.jpg"]):
            s.add(Task(**row))
    sched = Scheduler(cfg, db, storage, None, **{**FAST, "maintenance_s": HOUR})
    await sched.start()

    async def all_done() -> bool:
        async with db.read() as s:
            done = (await s.execute(select(Task.state))).scalars().all()
        return all(st == "completed" for st in done)

    try:
        await async_wait_for(all_done, what="every task completed", interval=0.05)
        async with db.read() as s:
            job = await s.get(Job, "job1")
        assert job is not None and job.state == "running" and job.finished_at is None
    finally:
        await sched.stop()
        await db.close()


async def test_the_maintenance_pass_follows_at_once(data_dir: Path,
                                                    stage_server: StageServer) -> None:
    """The report of the closed job is written by the pass the close woke, not an hour
    later."""
    def reported(job: Job, storage: Storage) -> bool:
        return job.state != "running" and (storage.job_reports("job1") / "report.json").is_file()

    job, _, _ = await _run(data_dir, stage_server, ["a.jpg", "b.jpg"], reported)
    assert job.state == "completed"
