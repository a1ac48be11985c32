"""The scheduler against a real stage server over HTTP and a real SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.pipeline.scheduler import Scheduler
from shared.log_context import current_fields
from shared.settings import Settings
from shared.storage import Storage
from tests.support.gateway import FAST, StageServer, image_tasks, job_when, make_settings
from tests.support.servers import ThreadServer
from tests.support.waiting import async_wait_for

RunJob = Callable[..., Awaitable[tuple[Job, list[Task]]]]


@pytest.fixture
async def run_job(data_dir: Path, stage_server: StageServer) -> AsyncIterator[RunJob]:
    """Seed one running job, run a scheduler until the job ends, return its rows."""
    dbs: list[Database] = []

    async def run(paths: list[str], *, settings: Settings | None = None, job: dict[str, Any]
                  | None = None, gt: bool = False, until: Callable[[Job], bool] | None = None,
                  ) -> tuple[Job, list[Task]]:
        settings = settings or make_settings(data_dir, stage_server.url)
        db = await Database.open(settings)
        dbs.append(db)
        storage = Storage(data_dir)
        async with db.write() as s:
            s.add(Job(id="job1", state="running", total=len(paths), **(job or {})))
            await s.flush()
            for row in image_tasks(storage, "job1", paths):
                if gt:
                    row["gt"] = row["input"]
                s.add(Task(**row))
        sched = Scheduler(settings, db, storage, None, **FAST)
        await sched.start()
        done = until or (
            lambda j: j.state != "running" and (j.callback_done or not j.callback_url)
        )
        try:
            found: tuple[Job, list[Task]] = await async_wait_for(
                lambda: job_when(db, "job1", done), what="the job's end", interval=0.05)
            return found
        finally:
            await sched.stop()

    yield run
    for db in dbs:
        await db.close()


async def test_all_images_go_through_both_stages(
    run_job: RunJob, stage_server: StageServer, data_dir: Path
) -> None:
    paths = [f"a/b/img{i}.jpg" for i in range(6)]
    job, tasks = await run_job(paths, gt=True, job={"output": "both"})
    assert job.state == "completed" and job.finished_at and job.started_at
    storage = Storage(data_dir)
    for t in tasks:
        assert t.state == "completed" and t.retry_count == 0
        assert t.matting_worker == "mw-1" and t.comparison_worker == "cw-1"
        assert t.matting_batch_size == 2 and t.metrics == {"sad": 0.5, "mse": 0.01}
        assert t.matting_output == storage.matting_rel("job1", t.path)
        assert storage.resolve(storage.compare_rel("job1", t.path)).is_file()
        assert storage.resolve(storage.matting_rel("job1", t.path, ".alpha.png")).is_file()
        assert t.matting_dispatched_at and t.matting_finished_at and t.completed_at
    assert len(stage_server.calls) == 12


async def test_in_flight_requests_stay_within_the_concurrency(
    run_job: RunJob, stage_server: StageServer, data_dir: Path
) -> None:
    stage_server.plan["matting"] = ["slow:0.2"] * 8
    settings = make_settings(data_dir, stage_server.url, matting_concurrency=3)
    job, _ = await run_job([f"{i}.jpg" for i in range(8)], settings=settings)
    assert job.state == "completed"
    assert stage_server.max_active["matting"] == 3


async def test_retries_then_success(run_job: RunJob, stage_server: StageServer) -> None:
    # attempts are counted per task, over both stages: two failures, the third try succeeds
    stage_server.plan["matting"] = ["garbage"]
    stage_server.plan["compare"] = ["nofile"]
    job, (t,) = await run_job(["x.jpg"])
    assert job.state == "completed" and t.state == "completed"
    assert t.retry_count == 2 and t.error is None
    assert [c[0] for c in stage_server.calls] == ["matting"] * 2 + ["compare"] * 2


async def test_permanently_failed_at_max_retries(
    run_job: RunJob, stage_server: StageServer
) -> None:
    stage_server.plan["matting"] = ["retryable"] * 10
    job, (t,) = await run_job(["x.jpg"])
    assert t.state == "permanently_failed" and t.retry_count == 3
    assert t.failed_stage == "matting" and "worker crashed" in (t.error or "")
    assert len(stage_server.calls) == 3
    assert job.state == "failed"


async def test_bad_input_fails_at_once(run_job: RunJob, stage_server: StageServer) -> None:
    stage_server.by_input["bad.jpg"] = ["fatal"]
    job, (bad, good) = await run_job(["bad.jpg", "good.jpg"])
    assert bad.state == "permanently_failed" and bad.retry_count == 1
    assert "not an image" in (bad.error or "")
    assert good.state == "completed"
    assert job.state == "completed_with_errors"


async def test_busy_stage_is_waited_for_not_counted(
    run_job: RunJob, stage_server: StageServer
) -> None:
    stage_server.plan["matting"] = ["busy", "busy"]
    stage_server.plan["compare"] = ["busy"]
    job, (t,) = await run_job(["x.jpg"])
    assert job.state == "completed" and t.retry_count == 0


async def test_unreachable_stage_does_not_fail_tasks(run_job: RunJob, data_dir: Path) -> None:
    settings = make_settings(data_dir, "http://127.0.0.1:9")  # nothing listens there
    job, tasks = await run_job(
        ["a.jpg", "b.jpg"], settings=settings, until=lambda j: j.started_at is not None
    )
    await asyncio.sleep(0.5)
    assert job.state == "running"
    assert all(t.retry_count == 0 and t.state in ("pending", "dispatched_matting") for t in tasks)


async def test_callback_is_sent_once_and_signed(run_job: RunJob, data_dir: Path,
                                                stage_server: StageServer) -> None:
    got: list[tuple[bytes, str]] = []
    hook = FastAPI()

    @hook.post("/hook")
    async def receive(request: Request) -> dict[str, str]:
        got.append((await request.body(), request.headers.get("x-mattepipe-signature", "")))
        return {"ok": "yes"}

    with ThreadServer(hook) as srv:
        settings = make_settings(data_dir, stage_server.url, callback_secret="s3cret",
                                 callback_allow_private=True)  # the receiver is on 127.0.0.1
        job, _ = await run_job(["x.jpg"], settings=settings,
                               job={"callback_url": f"{srv.url}/hook"})
        await asyncio.sleep(0.3)  # a few more maintenance passes: still one POST
    assert job.callback_done
    assert job.callback_error is None and job.callback_attempts == 1
    assert len(got) == 1
    body, signature = got[0]
    assert signature == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    doc = json.loads(body)
    assert doc["job_id"] == "job1" and doc["state"] == "completed" and doc["completed"] == 1


# --- webhooks: bounded attempts counted in the database, internal addresses refused ---------
@dataclass
class Hook:
    url: str
    """Names the receiver on 127.0.0.1 as `localhost`."""
    plan: list[int] = field(default_factory=list)
    """Status codes of the next answers (200 once the list is empty)."""
    answered: list[int] = field(default_factory=list)


@pytest.fixture
def hook() -> Iterator[Hook]:
    app = FastAPI()
    h = Hook("")

    @app.post("/hook")
    async def receive() -> JSONResponse:
        code = h.plan.pop(0) if h.plan else 200
        h.answered.append(code)
        return JSONResponse({}, status_code=code)

    with ThreadServer(app) as srv:
        h.url = f"http://localhost:{srv.port}/hook"
        yield h


def _finished_job(**kw: Any) -> Job:
    return Job(id="j", state="completed", total=0, finished_at=time.time(), **kw)


async def _run_until_callback_done(settings: Settings, data_dir: Path, job: Job | None,
                                   passes_after: int = 6) -> tuple[Job, Scheduler]:
    """Seed `job` (unless None), run a scheduler until its webhook is done, then a few more
    maintenance passes; the job row as it is then, and the (stopped) scheduler."""
    db = await Database.open(settings)
    try:
        if job is not None:
            async with db.write() as s:
                s.add(job)
        sched = Scheduler(settings, db, Storage(data_dir), None, **FAST)
        await sched.start()
        try:
            async def webhook_done() -> bool:
                async with db.read() as s:
                    row = await s.get(Job, "j")
                    assert row is not None
                return bool(row.callback_done)

            await async_wait_for(webhook_done, what="the webhook's end", interval=0.05)
            for _ in range(passes_after):
                await sched.maintain_once()
            await asyncio.sleep(0.2)  # any webhook task fired by those passes has run
        finally:
            await sched.stop()
        async with db.read() as s:
            row = await s.get(Job, "j")
        assert row is not None
        return row, sched
    finally:
        await db.close()


async def test_callback_to_a_name_for_loopback_is_refused(data_dir: Path, hook: Hook) -> None:
    settings = make_settings(data_dir)  # CALLBACK_ALLOW_PRIVATE off
    job, _ = await _run_until_callback_done(settings, data_dir,
                                            _finished_job(callback_url=hook.url))
    assert hook.answered == []
    assert job.callback_attempts == 1
    assert "localhost resolves to" in (job.callback_error or "")
    assert "loopback" in (job.callback_error or "")


async def test_unsendable_callback_ends_after_the_bounded_attempts(data_dir: Path) -> None:
    # "a..b" passes the creation check and fails inside the send (an IDNA error, no
    # httpx.HTTPError): attempts are counted, then the webhook is failed, not refired
    settings = make_settings(data_dir, callback_allow_private=True, callback_max_attempts=3)
    job, _ = await _run_until_callback_done(settings, data_dir,
                                            _finished_job(callback_url="http://a..b/hook"))
    assert job.callback_attempts == 3
    assert "UnicodeError" in (job.callback_error or "")
    # a restart: the count is in the database, so nothing is sent again
    job, _ = await _run_until_callback_done(settings, data_dir, None)
    assert job.callback_attempts == 3


async def test_a_url_written_past_the_checks_is_failed_at_once(data_dir: Path) -> None:
    settings = make_settings(data_dir, callback_allow_private=True)
    job, _ = await _run_until_callback_done(
        settings, data_dir, _finished_job(callback_url="http://127.0.0.1:99999/"))
    assert job.callback_attempts == 1 and "port" in (job.callback_error or "").lower()


async def test_callback_attempts_continue_across_a_restart(data_dir: Path, hook: Hook) -> None:
    settings = make_settings(data_dir, callback_allow_private=True, callback_max_attempts=5)
    # an earlier process made 3 attempts; the receiver keeps answering 500
    hook.plan.extend([500] * 10)
    job, _ = await _run_until_callback_done(
        settings, data_dir, _finished_job(callback_url=hook.url, callback_attempts=3))
    assert hook.answered == [500, 500]
    assert job.callback_attempts == 5 and "500" in (job.callback_error or "")


async def test_webhooks_have_their_own_client(data_dir: Path) -> None:
    settings = make_settings(data_dir)
    db = await Database.open(settings)
    sched = Scheduler(settings, db, Storage(data_dir), None, **FAST)
    await sched.start()
    try:
        assert sched.webhooks is not None and sched.client is not None
        assert sched.webhooks.client is not sched.client
        assert not sched.webhooks.client.follow_redirects
    finally:
        await sched.stop()
        await db.close()


# --- the internal plane (docs/guarantees.md, "Threat model", "The internal plane") -------------


async def test_stage_calls_carry_the_internal_token_and_webhooks_do_not(
    run_job: RunJob, data_dir: Path, stage_server: StageServer
) -> None:
    seen: list[str] = []
    hook = FastAPI()

    @hook.post("/hook")
    async def receive(request: Request) -> dict[str, str]:
        seen.append(request.headers.get("authorization", ""))
        return {"ok": "yes"}

    with ThreadServer(hook) as srv:
        settings = make_settings(data_dir, stage_server.url, internal_token="plane-secret",
                                 callback_allow_private=True)
        job, _ = await run_job(["x.jpg"], settings=settings,
                               job={"callback_url": f"{srv.url}/hook"})
    assert job.state == "completed" and job.callback_done
    assert stage_server.authorization == ["Bearer plane-secret"] * 2
    assert seen == [""]  # the shared HTTP client never sends the token elsewhere


async def test_task_errors_name_no_internal_url_or_path(
    run_job: RunJob, stage_server: StageServer, data_dir: Path
) -> None:
    stage_server.plan["matting"] = ["leaky"]
    root = str(Storage(data_dir).root)
    _, (t,) = await run_job(["x.jpg"])
    assert t.state == "permanently_failed" and t.error
    assert "http://" not in t.error and "127.0.0.1" not in t.error and "8001" not in t.error
    assert root not in t.error
    assert "<matting_api>" in t.error and "input/job1/chunks/x.jpg" in t.error  # still useful


async def test_a_refused_token_is_waited_out_not_counted(
    run_job: RunJob, stage_server: StageServer
) -> None:
    stage_server.plan["matting"] = ["unauthorized", "unauthorized"]
    job, (t,) = await run_job(["x.jpg"])
    assert job.state == "completed" and t.retry_count == 0



class _Fields(logging.Handler):
    """Keeps each line's message with the ids bound when it was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, dict[str, object]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), current_fields()))


async def test_each_stage_call_carries_its_own_request_id(
    run_job: RunJob, stage_server: StageServer
) -> None:
    stage_server.plan["matting"] = ["retryable"]  # two matting attempts for the first task
    seen = _Fields()
    lg = logging.getLogger("gateway.pipeline.scheduler")
    lg.addHandler(seen)
    level = lg.level
    lg.setLevel(logging.INFO)
    try:
        job, _ = await run_job(["x.jpg", "y.jpg"])
    finally:
        lg.removeHandler(seen)
        lg.setLevel(level)
    assert job.state == "completed"
    ids = stage_server.request_ids
    assert len(ids) == len(stage_server.calls) == 5 and len(set(ids)) == 5  # one per attempt
    for (route, task_id), rid in zip(stage_server.calls, ids, strict=True):
        stage = "matting" if route == "matting" else "comparison"
        assert rid.startswith(f"job1:{task_id}:{stage}:") and len(rid) <= 128
    # the gateway logs each call with its request id, job, task and stage
    calls = {str(f.get("request_id")): f for m, f in seen.lines if " call: " in m}
    assert set(calls) == set(ids)
    for rid, f in calls.items():
        assert f["job_id"] == "job1" and rid.startswith(f"job1:{f['task_id']}:{f['stage']}:")
