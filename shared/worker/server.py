"""The one worker server: a WorkerStage (matting or comparison) behind HTTP, batched.

A request's params are checked against the stage's request model (a misfit is a 400 that names
the field), then it goes prepare (decode, in a thread) → the stage's batcher (engine, batched, in a
thread) → finish (encode and atomic write, in a thread), so the event loop only routes.
Every failure becomes a `StageError` whose status and `retryable` flag tell the gateway
whether another try can help (docs/DESIGN.md, "Internal API").
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from shared.internal_auth import InternalAuth, auth_headers, require_token
from shared.limits import WORKER_IO_OVERLAP
from shared.log_context import bind
from shared.logs import add_request_logging, debug_log
from shared.metrics import BATCH_SIZE, QUEUE_DEPTH, STAGE_ERRORS, STAGE_SECONDS, metrics_route
from shared.resources import resource_loop
from shared.schemas import (
    ForwardedRequest,
    HealthInfo,
    Heartbeat,
    ModelReload,
    StageBatch,
    StageBatchAnswer,
    StageError,
    StageRequest,
    StageResult,
    Timings,
    validation_detail,
)
from shared.settings import Settings
from shared.stages import BATCH_ROUTE_SUFFIX
from shared.storage import Storage
from shared.timing import HEALTH_CHECK_TIMEOUT_S, HEARTBEAT_INTERVAL_S
from shared.worker.batching import Batched, Batcher
from shared.worker.fallback import Failed, run_isolated
from shared.worker.stage import (
    BadInput,
    HoldsModels,
    StageOutput,
    WorkerStage,
    classify_error,
)

__all__ = ["batch_answer_json", "create_worker_app"]

R = TypeVar("R")
# The stage vocabulary is re-exported: stages import everything from `shared.worker.server`.

log = logging.getLogger("mattepipe.worker")


def _each(reqs: list[StageRequest[Any]],
          fn: Callable[[int, StageRequest[Any]], R]) -> list[R | Exception]:
    """`fn(k, reqs[k])` for every request in turn (in a worker thread), a request's exception
    kept in its place instead of stopping the rest; each call bound to its request's ids for
    the log, as a request served alone is."""
    out: list[R | Exception] = []
    for k, req in enumerate(reqs):
        with bind(job_id=req.job_id, task_id=req.task_id):
            try:
                out.append(fn(k, req))
            except Exception as exc:
                out.append(exc)
    return out


def batch_answer_json(answers: list[tuple[int, dict[str, Any]]]) -> bytes:
    """A `StageBatchAnswer`'s JSON, written by orjson from the bodies `answer` made (each a
    `StageResult` or `StageError` already dumped): no second pass of pydantic over 32 bodies
    and no standard-library encoder (issue 17: with the parse of the batch, the worker's
    largest per-task cost outside its stage). The shape is `StageBatchAnswer`'s (a test
    checks it against the model)."""
    body = {"answers": [{"status_code": st, "body": b} for st, b in answers]}
    # keys that are `StrEnum` members (the metric names) or numbers are written as json writes
    # them (their value, in quotes); orjson refuses any key but a plain str without this
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def _advertised_url(settings: Settings, host: str, port: int) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


class _Worker:
    def __init__(
        self, stage: WorkerStage[Any, Any, Any], settings: Settings, worker_id: str
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.worker_id = worker_id
        self.storage = Storage.from_settings(settings)
        self.status: Literal["loading", "ok", "error"] = "loading"
        self.detail = ""
        self.batchers: dict[str, Batcher[Any, Any]] = {}
        self._ensure_lock = asyncio.Lock()
        self._slots: dict[str, asyncio.Semaphore] = {}
        """Per batch key of a stage that batches nothing: how many run at once."""
        self.in_flight = 0
        self.served = 0
        self.failed = 0
        self.started_at = time.time()

    async def load(self) -> None:
        try:
            await asyncio.to_thread(self.stage.load)
        except Exception as exc:
            self.status, self.detail = "error", f"{type(exc).__name__}: {exc}"
            log.exception("%s failed to load", self.worker_id)
            return
        self.status = "ok"
        log.info("%s ready (%s)", self.worker_id, self.stage.name)

    async def batcher(self, key: str) -> Batcher[Any, Any]:
        b = self.batchers.get(key)
        if b is not None:
            return b
        async with self._ensure_lock:  # one lazy model load at a time
            b = self.batchers.get(key)
            if b is None:
                policy = await asyncio.to_thread(self.stage.ensure, key)
                b = Batcher(self._isolating(key), policy.max_batch_size,
                            policy.max_batch_delay_ms, policy.concurrency, name=key)
                self.batchers[key] = b
                debug_log.info("%s batcher %r: %s", self.worker_id, key, policy)
        return b

    def _isolating(self, key: str) -> Any:
        """A failing batch is retried item by item, so one poisoned image fails alone."""

        def run(items: list[Any]) -> list[Any]:
            return run_isolated(lambda batch: self.stage.run_batch(key, batch), items)

        return run

    def queues(self) -> dict[str, Any]:
        """The resource line's queue figures: requests in flight, and each batcher's queue."""
        return {"in_flight": self.in_flight,
                "batchers": {k: {"queued": b.queued, "running": b.running}
                             for k, b in self.batchers.items()}}

    def queue_depth(self) -> int:
        return sum(b.queued for b in self.batchers.values())

    def typed(self, raw: ForwardedRequest) -> StageRequest[Any]:
        """The request with its params checked against the stage's model; BadInput if not."""
        try:
            return self.stage.request_model.model_validate(raw.model_dump())
        except ValidationError as exc:
            raise BadInput(f"invalid request: {validation_detail(exc)}") from exc

    async def handle(self, raw: ForwardedRequest) -> JSONResponse:
        status, body = await self.answer(raw)
        return JSONResponse(body, status_code=status)

    async def handle_batch(self, batch: StageBatch) -> Response:
        """Every request of the batch, each answered as if it had come alone (its own status,
        its own error), but with a few thread hops for the whole batch instead of two or three
        per request (`answer_many`). One answer per request, in order."""
        answers = await self.answer_many(batch.requests)
        return Response(batch_answer_json(answers), media_type="application/json")

    async def answer_many(self, raws: list[ForwardedRequest]) -> list[tuple[int, dict[str, Any]]]:
        """`answer` for every request of a batch call, grouped by batch key.

        Per small image a thread hop (and the event loop's wake-up when it ends) cost as much
        as the work (issue 17's profile): here a batching stage prepares all of a key's
        requests in one hop, runs them through its batcher (which cuts them into engine
        batches) and finishes them in a few hops side by side; a stage that batches nothing
        (the comparison) runs them in at most `concurrency` + WORKER_IO_OVERLAP hops side by
        side. Each request still fails alone: its exception becomes its own answer
        (`classify_error`)."""
        queued = time.time()
        out: list[tuple[int, dict[str, Any]] | None] = [None] * len(raws)
        groups: dict[str, list[tuple[int, StageRequest[Any]]]] = {}
        for i, raw in enumerate(raws):
            if self.status != "ok":
                detail = "engine still loading" if self.status == "loading" else self.detail
                out[i] = self._error_body(503, True, detail, raw)
                continue
            try:
                req = self.typed(raw)
                groups.setdefault(self.stage.batch_key(req), []).append((i, req))
            except Exception as exc:
                out[i] = self._failure_body(exc, raw)
        self.in_flight += len(raws)
        try:
            done = await asyncio.gather(*(self._run_group(key, members, queued)
                                          for key, members in groups.items()))
        finally:
            self.in_flight -= len(raws)
            QUEUE_DEPTH.labels(self.stage.name).set(self.queue_depth())
        for answers in done:
            for i, answer in answers:
                out[i] = answer
        return [a for a in out if a is not None]

    async def _run_group(self, key: str, members: list[tuple[int, StageRequest[Any]]],
                         queued: float) -> list[tuple[int, tuple[int, dict[str, Any]]]]:
        """One batch key's requests of a batch call: (index, answer) each."""
        try:
            batcher = await self.batcher(key)
        except Exception as exc:
            return [(i, self._failure_body(exc, req)) for i, req in members]
        reqs = [req for _, req in members]
        if batcher.max_batch_size == 1:
            results = await self._unbatched_many(key, batcher, reqs)
        else:
            results = await self._batched_many(batcher, reqs)
        return [(i, self._answer_body(req, r, queued) if not isinstance(r, Exception)
                 else self._failure_body(r, req))
                for (i, req), r in zip(members, results, strict=True)]

    async def _batched_many(
        self, batcher: Batcher[Any, Any], reqs: list[StageRequest[Any]],
    ) -> list[tuple[Batched[Any], StageOutput] | Exception]:
        """prepare (one hop) → the batcher (its own hops, one per engine batch) → finish
        (1 + WORKER_IO_OVERLAP hops side by side), each request's failure kept in its place."""
        stage, storage = self.stage, self.storage
        prepared = await asyncio.to_thread(
            _each, reqs, lambda _, req: stage.prepare(req, storage))
        live = [i for i, p in enumerate(prepared) if not isinstance(p, Exception)]
        QUEUE_DEPTH.labels(stage.name).set(self.queue_depth() + len(live))
        ran = await asyncio.gather(*(batcher.submit(prepared[i]) for i in live),
                                   return_exceptions=True)
        results: list[tuple[Batched[Any], StageOutput] | Exception] = [
            p for p in prepared]  # the failures stay; the rest are replaced below
        to_finish: list[tuple[int, Batched[Any]]] = []
        for i, res in zip(live, ran, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                results[i] = res
            elif isinstance(res.value, Failed):
                results[i] = res.value.exc
            else:
                to_finish.append((i, res))

        def finish_part(part: list[tuple[int, Batched[Any]]]) -> list[StageOutput | Exception]:
            return _each([reqs[i] for i, _ in part],
                         lambda k, req: stage.finish(req, prepared[part[k][0]],
                                                     part[k][1].value, storage))

        # encode and write in a few hops side by side: a file's creation waits on the disk
        # (ms on a busy volume), and the GIL is free meanwhile
        size = -(-len(to_finish) // (1 + WORKER_IO_OVERLAP)) if to_finish else 1
        parts = [to_finish[k:k + size] for k in range(0, len(to_finish), size)]
        done = await asyncio.gather(*(asyncio.to_thread(finish_part, p) for p in parts))
        finished = [f for part in done for f in part]
        for (i, res), fin in zip(to_finish, finished, strict=True):
            results[i] = fin if isinstance(fin, Exception) else (res, fin)
        return results

    async def _unbatched_many(
        self, key: str, batcher: Batcher[Any, Any], reqs: list[StageRequest[Any]],
    ) -> list[tuple[Batched[Any], StageOutput] | Exception]:
        """`_unbatched` for many requests: split into at most `concurrency` +
        WORKER_IO_OVERLAP runs of consecutive requests, each run one thread hop (and one
        slot) doing every request's prepare, run and finish in turn."""
        n = min(len(reqs), batcher.concurrency + WORKER_IO_OVERLAP)
        size = -(-len(reqs) // n)
        runs = [reqs[k:k + size] for k in range(0, len(reqs), size)]

        async def one_run(part: list[StageRequest[Any]]
                          ) -> list[tuple[Batched[Any], StageOutput] | Exception]:
            done: list[tuple[Batched[Any], StageOutput] | Exception] = await self._unbatched(
                key, batcher, part,
                lambda: _each(part, lambda _, req: self._one_unbatched(key, req)))
            return done

        parts = await asyncio.gather(*(one_run(p) for p in runs))
        return [r for part in parts for r in part]

    async def answer(self, raw: ForwardedRequest) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for one request: a `StageResult` or a `StageError`."""
        queued = time.time()
        req: StageRequest[Any] = raw
        if self.status != "ok":
            detail = "engine still loading" if self.status == "loading" else self.detail
            return self._error_body(503, True, detail, req)
        self.in_flight += 1
        try:
            req = self.typed(raw)
            key = self.stage.batch_key(req)
            batcher = await self.batcher(key)
            res: Batched[Any]
            if batcher.max_batch_size == 1:
                res, out = await self._unbatched(key, batcher, req)
            else:
                batcher.announce()
                try:
                    item = await asyncio.to_thread(self.stage.prepare, req, self.storage)
                except BaseException:
                    batcher.withdraw()
                    raise
                QUEUE_DEPTH.labels(self.stage.name).set(self.queue_depth() + 1)
                res = await batcher.submit(item, announced=True)
                if isinstance(res.value, Failed):
                    raise res.value.exc
                out = await asyncio.to_thread(self.stage.finish, req, item, res.value,
                                              self.storage)
        except Exception as exc:
            return self._failure_body(exc, req)
        finally:
            self.in_flight -= 1
            QUEUE_DEPTH.labels(self.stage.name).set(self.queue_depth())
        return self._answer_body(req, (res, out), queued)

    def _answer_body(self, req: StageRequest[Any], done: tuple[Batched[Any], StageOutput],
                     queued: float) -> tuple[int, dict[str, Any]]:
        """A success's (200, `StageResult`), counted in the metrics."""
        res, out = done
        key = self.stage.batch_key(req)
        finished = time.time()
        self.served += 1
        BATCH_SIZE.labels(self.stage.name, key).observe(res.batch_size)
        STAGE_SECONDS.labels(self.stage.name, "wait").observe(max(0.0, res.started - queued))
        STAGE_SECONDS.labels(self.stage.name, "batch").observe(res.finished - res.started)
        STAGE_SECONDS.labels(self.stage.name, "total").observe(finished - queued)
        debug_log.debug("task %s key=%s batch=%d in_flight=%d queued=%d", req.task_id, key,
                        res.batch_size, self.in_flight, self.queue_depth())
        timings = Timings(queued=queued, started=res.started, finished=finished,
                          batch_size=res.batch_size)
        result = StageResult(output=out.output, worker_id=self.worker_id, timings=timings,
                             extra=out.extra)
        return 200, result.model_dump()

    def _failure_body(self, exc: Exception, req: StageRequest[Any]) -> tuple[int, dict[str, Any]]:
        """A failed request's (status, `StageError`), logged as `answer` always has."""
        status, retryable, detail = classify_error(exc, self.storage)
        if status >= 500:
            with bind(job_id=req.job_id, task_id=req.task_id):
                log.error("task %s failed: %s", req.task_id, detail, exc_info=exc
                          if status == 500 else None)
        return self._error_body(status, retryable, detail, req)

    def _one_unbatched(self, key: str, req: StageRequest[Any]) -> tuple[Batched[Any], StageOutput]:
        """prepare, run and finish of one request of a stage that batches nothing (in a
        thread)."""
        item = self.stage.prepare(req, self.storage)
        started = time.time()
        value = run_isolated(lambda b: self.stage.run_batch(key, b), [item])[0]
        finished = time.time()
        if isinstance(value, Failed):
            raise value.exc
        out = self.stage.finish(req, item, value, self.storage)
        return Batched(value, 1, started, finished), out

    async def _unbatched(self, key: str, batcher: Batcher[Any, Any],
                         req: StageRequest[Any] | list[StageRequest[Any]],
                         work: Callable[[], Any] | None = None) -> Any:
        """A stage that batches nothing (`max_batch_size` 1, the comparison): prepare, run and
        finish in ONE thread hop instead of three plus the batcher's, at most `concurrency`
        (+ WORKER_IO_OVERLAP, so items' file I/O overlaps other items' work) at a time. Per
        small image the hops cost as much as the work. `work` (`_unbatched_many`) does several
        requests in the one hop."""
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(batcher.concurrency + WORKER_IO_OVERLAP)
        n = len(req) if isinstance(req, list) else 1
        if work is None:
            assert not isinstance(req, list)
            one = req

            def work() -> tuple[Batched[Any], StageOutput]:
                return self._one_unbatched(key, one)

        async with slots:
            try:
                return await asyncio.to_thread(work)
            finally:
                batcher.batches_run += n
                batcher.items_run += n

    def _error(self, status: int, retryable: bool, detail: str,
               req: StageRequest[Any] | None = None) -> JSONResponse:
        status, body = self._error_body(status, retryable, detail, req)
        return JSONResponse(body, status_code=status)

    def _error_body(self, status: int, retryable: bool, detail: str,
                    req: StageRequest[Any] | None = None) -> tuple[int, dict[str, Any]]:
        self.failed += 1
        STAGE_ERRORS.labels(self.stage.name, str(status)).inc()
        if req is not None and status < 500:
            log.info("task %s refused (%d): %s", req.task_id, status, detail)
        body = StageError(detail=detail, retryable=retryable, worker_id=self.worker_id)
        return status, body.model_dump()

    def info(self) -> dict[str, Any]:
        return {
            "service": self.stage.name,
            "worker_id": self.worker_id,
            "status": self.status,
            "detail": self.detail,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "capacity": self.stage.capacity() if self.status == "ok" else 0,
            "in_flight": self.in_flight,
            "served": self.served,
            "failed": self.failed,
            "batchers": {
                k: {"max_batch_size": b.max_batch_size, "concurrency": b.concurrency,
                    "queued": b.queued, "running": b.running, "batches": b.batches_run,
                    "items": b.items_run}
                for k, b in self.batchers.items()
            },
            "stage": self.stage.info() if self.status == "ok" else {},
        }

    async def heartbeats(self, balancer_url: str, my_url: str) -> None:
        """Announce ourselves once loaded (a heartbeat means: send me work)."""
        target = balancer_url.rstrip("/") + "/workers/heartbeat"
        client = httpx.AsyncClient(timeout=HEALTH_CHECK_TIMEOUT_S, trust_env=False,
                                   headers=auth_headers(self.settings.internal_token))
        async with client:
            while True:
                if self.status == "ok":
                    hb = Heartbeat(url=my_url, worker_id=self.worker_id,
                                   capacity=self.stage.capacity(),
                                   engine=str(self.stage.info().get("engine", "")))
                    try:
                        r = await client.post(target, json=hb.model_dump())
                        if r.status_code >= 400:
                            debug_log.warning("heartbeat to %s: HTTP %d", target, r.status_code)
                    except httpx.HTTPError as exc:
                        debug_log.info("heartbeat to %s failed: %r", target, exc)
                await asyncio.sleep(HEARTBEAT_INTERVAL_S)


def create_worker_app(
    stage: WorkerStage[Any, Any, Any],
    settings: Settings,
    worker_id: str,
    port: int,
    balancer_url: str = "",
    host: str | None = None,
) -> FastAPI:
    """The worker's HTTP app; `balancer_url` empty means no heartbeats (static list only).
    Every route but /health needs `settings.internal_token` (`shared.internal_auth`)."""
    token = require_token(settings.internal_token, f"{stage.name} worker")
    w = _Worker(stage, settings, worker_id)
    my_url = _advertised_url(settings, host if host is not None else settings.host, port)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(w.load()),
                 asyncio.create_task(resource_loop(worker_id, settings.resource_log_interval_s,
                                                   w.queues))]
        if balancer_url:
            tasks.append(asyncio.create_task(w.heartbeats(balancer_url, my_url)))
        yield
        for t in tasks:
            t.cancel()
        for b in w.batchers.values():
            await b.close()

    app = FastAPI(title=f"mattepipe {stage.name} worker", lifespan=lifespan)
    app.state.worker = w
    app.add_middleware(InternalAuth, token=token)
    add_request_logging(app, stage.name + "_worker")
    metrics_route(app)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return w._error(422, False, f"invalid request: {msg}")

    async def run_stage(req: ForwardedRequest) -> JSONResponse:
        with bind(job_id=req.job_id, task_id=req.task_id):  # and the caller's X-Request-ID
            return await w.handle(req)

    app.add_api_route(stage.route, run_stage, methods=["POST"],
                      responses={400: {"model": StageError}, 503: {"model": StageError}})

    async def run_batch(batch: StageBatch) -> Response:
        return await w.handle_batch(batch)

    app.add_api_route(stage.route + BATCH_ROUTE_SUFFIX, run_batch, methods=["POST"],
                      response_model=StageBatchAnswer,
                      responses={422: {"model": StageError}})

    @app.get("/health")
    async def health() -> JSONResponse:
        body = HealthInfo(status=w.status, service=stage.name, worker_id=worker_id,
                          detail=w.detail)
        return JSONResponse(body.model_dump(), status_code=200 if w.status == "ok" else 503)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return w.info()

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """The engines loaded now, least recently used first, and MAX_LOADED_MODELS."""
        base = {"service": stage.name, "worker_id": worker_id}
        if not isinstance(stage, HoldsModels):
            return {**base, "max_loaded": 0, "loaded": []}
        return {**base, **await asyncio.to_thread(stage.models)}

    @app.post("/models/reload")
    async def reload_models(body: ModelReload | None = None) -> dict[str, Any]:
        """Load the named engines (default: every loaded one) again from their files, now;
        a file that no longer loads is listed under `failed`."""
        base = {"service": stage.name, "worker_id": worker_id}
        if not isinstance(stage, HoldsModels) or w.status != "ok":
            return {**base, "reloaded": [], "failed": {}, "not_loaded": []}
        names = body.models if body is not None else None
        return {**base, **await asyncio.to_thread(stage.reload_models, names)}

    return app
