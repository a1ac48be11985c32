"""Helpers for the gateway's tests: a stage server standing in for the two balancers, the
gateway's settings for a test, rows seeded straight into its SQLite file.

The stage server answers `/matting` and `/compare` per the StageRequest/StageResult contract
and writes real PNG/JPEG files under DATA_DIR, with a per-test script of failures
(`StageServer.plan`).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.database import Database
from gateway.db.tables import Base, Job, Task
from gateway.state import GatewayState
from shared.schemas import (
    ComparisonRequest,
    MattingRequest,
    StageError,
    StageRequest,
    StageResult,
    Timings,
)
from shared.settings import Settings
from shared.storage import Storage
from tests.support.servers import free_port
from tests.support.waiting import wait_for


@dataclass
class StageServer:
    data_dir: Path
    url: str = ""
    plan: dict[str, list[str]] = field(default_factory=lambda: {"matting": [], "compare": []})
    """Per route, the outcomes of the next calls, in order ('ok' once the list is empty):
    'ok', 'retryable' (500 StageError), 'fatal' (422 not retryable), 'busy' (503),
    'garbage' (500 plain text), 'nofile' (success without writing), 'slow:<s>',
    'leaky' (400 whose detail names internal URLs and DATA_DIR's absolute path),
    'unauthorized' (401, as a balancer answers a wrong INTERNAL_TOKEN)."""
    by_input: dict[str, list[str]] = field(default_factory=dict)
    """Outcomes for requests whose input file name is the key (before `plan`)."""
    calls: list[tuple[str, int]] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every request as it arrived (JSON), per call."""
    """The Authorization header of every call ("" when none)."""
    request_ids: list[str] = field(default_factory=list)
    """The X-Request-ID header of every call ("" when none)."""
    batch_calls: list[tuple[str, int]] = field(default_factory=list)
    """(route, requests in it) of every `<route>/batch` call."""
    lanes: list[str] = field(default_factory=list)
    """The X-Mattepipe-Lane header of every call ("" when none: bulk)."""
    active: dict[str, int] = field(default_factory=lambda: {"matting": 0, "compare": 0})
    max_active: dict[str, int] = field(default_factory=lambda: {"matting": 0, "compare": 0})

    def app(self) -> FastAPI:
        app = FastAPI()
        storage = Storage(self.data_dir)

        async def handle(route: str, req: StageRequest[Any], request: Request) -> Any:
            self.calls.append((route, req.task_id))
            self.authorization.append(request.headers.get("authorization", ""))
            self.requests.append(req.model_dump(mode="json"))
            self.request_ids.append(request.headers.get("x-request-id", ""))
            self.lanes.append(request.headers.get("x-mattepipe-lane", ""))
            queue = self.by_input.get(Path(req.input).name) or self.plan[route]
            step = queue.pop(0) if queue else "ok"
            self.active[route] += 1
            self.max_active[route] = max(self.max_active[route], self.active[route])
            try:
                return await answer(route, req, step)
            finally:
                self.active[route] -= 1

        async def answer(route: str, req: StageRequest[Any], step: str) -> Any:
            if step.startswith("slow:"):
                await asyncio.sleep(float(step[5:]))
                step = "ok"
            if step == "retryable":
                err = StageError(detail="worker crashed", retryable=True, worker_id="w1")
                return JSONResponse(err.model_dump(), status_code=500)
            if step == "fatal":
                err = StageError(detail="not an image", retryable=False, worker_id="w1")
                return JSONResponse(err.model_dump(), status_code=422)
            if step == "busy":
                return JSONResponse({"detail": "saturated"}, 503, headers={"Retry-After": "0"})
            if step == "garbage":
                return JSONResponse("boom", status_code=500)
            if step == "leaky":
                detail = (f"{route}_api: gave up: worker http://127.0.0.1:9001/{route} failed: "
                          f"ConnectError('[Errno 111]') reading {self.data_dir.resolve()}/"
                          f"{req.input}; balancer http://matting-api:8001/workers said no")
                err = StageError(detail=detail, retryable=False, worker_id="w1")
                return JSONResponse(err.model_dump(), status_code=400)
            if step == "unauthorized":
                return JSONResponse({"status": "error", "detail": "missing or wrong internal "
                                     "token", "retryable": False}, status_code=401)
            t0 = time.time()
            extra: dict[str, Any] = {}
            if step != "nofile":
                out = storage.resolve(req.output)
                out.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(req, MattingRequest):
                    Image.new("RGBA", (4, 3), (10, 20, 30, 128)).save(out, "PNG")
                    # a shaped cut-out keeps the full-size matte, as the real worker does
                    if req.params.output == "both" or req.params.options.keeps_matte:
                        Image.new("L", (4, 3), 128).save(out.with_suffix(".alpha.png"), "PNG")
                else:
                    assert isinstance(req, ComparisonRequest)
                    assert storage.resolve(req.params.mattes[0].path).is_file()
                    buf = io.BytesIO()
                    Image.new("RGB", (8, 3), (200, 10, 10)).save(buf, "JPEG")
                    out.write_bytes(buf.getvalue())
                    extra["metrics"] = {"sad": 0.5, "mse": 0.01} if req.params.gt else None
            timings = Timings(queued=t0, started=t0, finished=time.time() + 0.001, batch_size=2)
            worker = "mw-1" if route == "matting" else "cw-1"
            return StageResult(output=req.output, worker_id=worker, timings=timings, extra=extra)

        @app.post("/matting")
        async def matting(req: MattingRequest, request: Request) -> Any:
            return await handle("matting", req, request)

        @app.post("/compare")
        async def compare(req: ComparisonRequest, request: Request) -> Any:
            return await handle("compare", req, request)

        async def batch(route: str, body: dict[str, Any], request: Request) -> Any:
            """`<route>/batch`: each request handled as a single call would be (the plan
            counts per task), the answers wrapped as the worker server wraps them."""
            self.batch_calls.append((route, len(body["requests"])))
            model = MattingRequest if route == "matting" else ComparisonRequest
            answers = []
            for raw in body["requests"]:
                r = await handle(route, model.model_validate(raw), request)
                if isinstance(r, StageResult):
                    answers.append({"status_code": 200, "body": r.model_dump(mode="json")})
                else:
                    b = json.loads(bytes(r.body))
                    answers.append({"status_code": r.status_code,
                                    "body": b if isinstance(b, dict) else {"detail": str(b)}})
            return {"answers": answers}

        @app.post("/matting/batch")
        async def matting_batch(body: dict[str, Any], request: Request) -> Any:
            return await batch("matting", body, request)

        @app.post("/compare/batch")
        async def compare_batch(body: dict[str, Any], request: Request) -> Any:
            return await batch("compare", body, request)

        return app


def make_settings(data_dir: Path, stage_url: str = "http://127.0.0.1:9", **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": "",
        "matting_api_url": stage_url,
        "comparison_api_url": stage_url,
        "api_key": None,
        "callback_secret": None,
        "max_retries": 3,
        "matting_concurrency": 4,
        "comparison_concurrency": 2,
        "stage_batch_size": 1,  # one call per task, as the stage server's plans count them
        "models_dir": data_dir / "models",
        # the suites' filler images are identical (`zip_of_images`): with the content-hash
        # cache on they would test the cache, not what they are about; its tests turn it on
        "result_cache": False,
        # a finished job's zip stored in the background would be what their downloads get:
        # these suites test the zip made as it is sent; the stored zip's tests turn it on
        "zip_store": False,
    }
    base.update(kw)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


FAST = {"backoff_base": 0.05, "backoff_max": 0.2, "idle_s": 0.05, "maintenance_s": 0.05,
        "callback_backoff": 0.05}
"""Scheduler options that make retries and polling quick enough for tests."""


def seed(settings: Settings, jobs: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
    """Write job and task rows straight into the SQLite file (creating the tables)."""
    url = settings.sqlite_url.replace("+aiosqlite", "")
    engine = create_sync_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        for j in jobs:
            s.add(Job(**j))
        s.flush()
        for t in tasks:
            s.add(Task(**t))
    engine.dispose()


def image_tasks(storage: Storage, job_id: str, paths: list[str], **kw: Any) -> list[dict[str, Any]]:
    """Task rows with real input files under the job's chunks folder."""
    rows = []
    for p in paths:
        f = storage.job_chunks(job_id) / p
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3), (1, 2, 3)).save(f, "JPEG")
        rows.append({"job_id": job_id, "path": p, "input": storage.relative(f), **kw})
    return rows


async def job_when(db: Database, job_id: str, done: Callable[[Job], bool]
                   ) -> tuple[Job, list[Task]] | None:
    """The job's row and its tasks (by id), read in one transaction, once `done(job)` holds;
    None before: a condition for `tests.support.waiting.async_wait_for`."""
    async with db.read() as s:
        job = await s.get(Job, job_id)
        assert job is not None
        if not done(job):
            return None
        return job, list((await s.execute(select(Task).order_by(Task.id))).scalars())


@dataclass
class Gateway:
    url: str
    settings: Settings
    storage: Storage
    client: httpx.Client


def sweep_expired_uploads(settings: Settings) -> int:
    """One pass of the tus sweeper, as a gateway started on `settings` runs it; how many
    expired uploads it removed."""

    async def sweep() -> int:
        state = await GatewayState.open(settings)
        try:
            return await state.tus.sweep_expired()
        finally:
            await state.close()

    return asyncio.run(sweep())


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m gateway` as its own process on a free port, answering `/health`: the
    process and its URL. `env` adds to this process's environment (DATA_DIR at least)."""
    port = free_port()
    full = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(port),
            "HOST": "127.0.0.1", "MATTING_API_URL": "http://127.0.0.1:9", **env}
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=120, what="python -m gateway answers /health")  # a whole start
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
