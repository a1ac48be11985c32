"""The one balancer: the matting API and the comparison API are two configurations of it.

It forwards a stage request to the healthy worker with the fewest requests in flight, waits
in a bounded queue when all are at capacity, fails over to another worker when one dies
mid-request, and answers 503 with Retry-After instead of piling work up without bound.
Every error it makes up itself is a `StageError` with `retryable: true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from shared.balancer.pool import HeartbeatRefused, NoWorker, WorkerPool, WorkerState
from shared.internal_auth import InternalAuth, auth_headers, require_token
from shared.lanes import LANE_HEADER, Lane, lane_of
from shared.limits import MAX_WORKER_CAPACITY
from shared.log_context import REQUEST_ID, REQUEST_ID_HEADER, bind
from shared.logs import add_request_logging, debug_log
from shared.metrics import QUEUE_DEPTH, WORKERS_HEALTHY, metrics_route
from shared.resources import resource_loop
from shared.schemas import (
    ForwardedRequest,
    Heartbeat,
    ModelReload,
    StageBatch,
    StageBatchAnswer,
    StageError,
)
from shared.stages import BATCH_ROUTE_SUFFIX
from shared.timing import (
    BALANCER_REQUEST_TIMEOUT_S,
    BALANCER_RETRY_AFTER_S,
    HEALTH_CHECK_INTERVAL_S,
    HEALTH_CHECK_TIMEOUT_S,
    STAGE_CONNECT_TIMEOUT_S,
    WORKER_STALE_S,
)

__all__ = ["BalancerConfig", "create_balancer_app"]

log = logging.getLogger("mattepipe.balancer")

_DEAD = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
         httpx.WriteError)
"""Transport errors that mean the worker is gone (not merely slow)."""


@dataclass
class BalancerConfig:
    service: str
    route: str
    port: int
    worker_urls: list[str]
    queue_limit: int
    queue_wait_s: float
    health_interval_s: float = HEALTH_CHECK_INTERVAL_S
    stale_s: float = WORKER_STALE_S
    max_attempts: int = 3
    """Workers tried for one request before giving up (fail-over)."""
    request_timeout_s: float = BALANCER_REQUEST_TIMEOUT_S
    token: str = ""
    """INTERNAL_TOKEN: required from callers (all routes but /health) and sent to workers."""
    resource_interval_s: float = 30.0
    """RESOURCE_LOG_INTERVAL_S: seconds between the debug log's resource lines; 0: none."""
    sync_limit: int = 0
    """SYNC_QUEUE_LIMIT: sync-lane requests (`shared.lanes`) waiting at most; more get 503."""
    sync_wait_s: float = 0.0
    """SYNC_QUEUE_WAIT_S: the longest a sync-lane request waits for a free worker slot."""


def _error(status: int, detail: str, retry_after: bool = True) -> JSONResponse:
    headers = {"Retry-After": str(BALANCER_RETRY_AFTER_S)} if retry_after else None
    body = StageError(detail=detail, retryable=True).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


class _Balancer:
    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.pool = WorkerPool(config.worker_urls, config.queue_limit, config.queue_wait_s,
                               config.sync_limit, config.sync_wait_s)
        self.client: httpx.AsyncClient | None = None
        self.started_at = time.time()
        self.headers = auth_headers(config.token)

    def queues(self) -> dict[str, Any]:
        """The resource line's queue figures: requests waiting, and in flight per worker."""
        return {"waiting": self.pool.waiting,
                "in_flight": {w.worker_id or w.url: w.outstanding
                              for w in self.pool.workers.values()}}

    def _gauges(self) -> None:
        WORKERS_HEALTHY.labels(self.config.service).set(self.pool.healthy_count())
        QUEUE_DEPTH.labels(self.config.service).set(self.pool.waiting)

    async def check(self, w: WorkerState) -> None:
        assert self.client is not None
        try:
            r = await self.client.get(w.url + "/health", timeout=HEALTH_CHECK_TIMEOUT_S)
            body = r.json()
            ok = r.status_code == 200 and body.get("status") == "ok"
            detail = "" if ok else f"HTTP {r.status_code}: {body.get('detail') or body}"
            w.worker_id = str(body.get("worker_id") or w.worker_id)
            if ok and not w.healthy and w.source == "static":
                ri = await self.client.get(w.url + "/info", headers=self.headers,
                                           timeout=HEALTH_CHECK_TIMEOUT_S)
                if ri.status_code == 401:  # it would refuse every task we send
                    ok, detail = False, "worker refuses this balancer's INTERNAL_TOKEN"
                else:
                    info = ri.json()
                    w.capacity = min(MAX_WORKER_CAPACITY,
                                     max(1, int(info.get("capacity") or w.capacity)))
                    w.engine = str(info.get("stage", {}).get("engine", w.engine))
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            ok, detail = False, f"health check failed: {exc!r}"
        self.pool.set_health(w, ok, detail)

    async def check_all(self) -> None:
        self.pool.drop_stale(self.config.stale_s)
        await asyncio.gather(*(self.check(w) for w in list(self.pool.workers.values())))
        self._gauges()
        debug_log.debug("%s workers: %s", self.config.service,
                        [(w.url, w.healthy, w.outstanding) for w in self.pool.workers.values()])

    async def health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.check_all()
            except Exception:
                log.exception("health check round failed")

    async def forward(self, req: ForwardedRequest, lane: Lane = Lane.BULK) -> Response:
        return await self._forward(self.config.route, req.model_dump_json(),
                                   str(req.task_id), lane)

    async def forward_batch(self, batch: StageBatch) -> Response:
        """A whole batch to one worker (its batch route): one slot of that worker, one
        fail-over decision for the batch. Each request's own answer comes back inside the
        worker's `StageBatchAnswer`, untouched."""
        first = batch.requests[0].task_id
        label = f"{first}+{len(batch.requests) - 1}"
        return await self._forward(self.config.route + BATCH_ROUTE_SUFFIX,
                                   batch.model_dump_json(), label)

    async def _forward(self, route: str, body: str, label: str,
                       lane: Lane = Lane.BULK) -> Response:
        """`body` (the request's JSON, as pydantic writes it) to a worker, with fail-over; the
        worker's JSON answer is passed on as it came (parsed once, by orjson, to check it and
        read `retryable`; not encoded again: issue 17, the balancers' per-task cost)."""
        assert self.client is not None
        headers = dict(self.headers)
        headers["content-type"] = "application/json"
        rid = REQUEST_ID.get()
        if rid:  # the worker logs and returns the caller's id (`shared.log_context`)
            headers[REQUEST_ID_HEADER] = rid
        tried: set[str] = set()
        last = ""
        for attempt in range(self.config.max_attempts):
            try:
                w = await self.pool.acquire(tried, sync=lane is Lane.SYNC)
            except NoWorker as exc:
                self._gauges()
                if attempt == 0:
                    return _error(503, f"{self.config.service}: {exc}")
                return _error(502, f"{self.config.service}: {last}; then {exc}")
            self._gauges()
            try:
                debug_log.debug("task %s → worker %s (attempt %d)", label,
                                w.worker_id or w.url, attempt + 1)
                r = await self.client.post(w.url + route, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                if not isinstance(exc, httpx.ConnectTimeout):
                    # The worker may still be on it; another try would double the wait.
                    w.failures += 1
                    return _error(504, f"worker {w.worker_id or '?'} timed out")
                last = f"worker {w.worker_id or '?'} unreachable ({type(exc).__name__})"
                self._lost(w, last)
                tried.add(w.url)
                continue
            except _DEAD as exc:
                last = f"worker {w.worker_id or '?'} failed ({type(exc).__name__})"
                self._lost(w, last)
                tried.add(w.url)
                continue
            except httpx.HTTPError as exc:
                w.failures += 1
                last = f"worker {w.worker_id or '?'}: {type(exc).__name__}"
                tried.add(w.url)
                continue
            finally:
                self.pool.release(w)
            raw: bytes | None = r.content
            try:
                payload: Any = orjson.loads(r.content)
            except orjson.JSONDecodeError:
                raw = None
                payload = StageError(detail=f"worker answered HTTP {r.status_code}, not JSON",
                                     retryable=r.status_code >= 500, worker_id=w.worker_id)
                payload = payload.model_dump()
            if r.status_code == 401:  # a worker with another token: not the task's fault
                last = f"worker {w.worker_id or '?'} refuses this balancer's INTERNAL_TOKEN"
                self._lost(w, last)
                tried.add(w.url)
                continue
            retryable = isinstance(payload, dict) and payload.get("retryable", True) is not False
            # 507: the shared volume is full, so every worker would say the same; pass it on
            if r.status_code >= 500 and retryable and r.status_code != 507:
                w.failures += 1
                last = f"worker {w.worker_id or '?'}: HTTP {r.status_code} {payload}"
                if r.status_code == 503:  # loading, or its engine failed: skip it for now
                    self.pool.set_health(w, False, last)
                tried.add(w.url)
                debug_log.info("task %s: %s; trying another worker", label, last)
                continue
            if r.status_code < 400:
                w.served += 1
            elif r.status_code >= 500:
                w.failures += 1
            if raw is None:
                return JSONResponse(payload, status_code=r.status_code)
            return Response(raw, status_code=r.status_code, media_type="application/json")
        return _error(502, f"{self.config.service}: gave up after {len(tried)} worker(s): {last}")

    async def to_every_worker(self, method: str, path: str,
                              body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """`method path` on every known worker at once: per worker its URL, id and HTTP status
        with its answer, or the error that kept it from answering (status 0)."""
        client = self.client
        assert client is not None

        async def one(w: WorkerState) -> dict[str, Any]:
            out: dict[str, Any] = {"url": w.url, "worker_id": w.worker_id}
            try:
                r = await client.request(method, w.url + path, json=body, headers=self.headers)
                out["status"] = r.status_code
                out["answer"] = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                out["status"], out["error"] = 0, f"{type(exc).__name__}: {exc}"
            return out

        return list(await asyncio.gather(*(one(w) for w in list(self.pool.workers.values()))))

    def _lost(self, w: WorkerState, detail: str) -> None:
        w.failures += 1
        self.pool.set_health(w, False, detail)
        self._gauges()


def create_balancer_app(config: BalancerConfig) -> FastAPI:
    """The balancer's HTTP app; every route but /health needs `config.token`."""
    token = require_token(config.token, config.service)
    b = _Balancer(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(config.request_timeout_s, connect=STAGE_CONNECT_TIMEOUT_S)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=128)
        b.client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        await b.check_all()  # so the first requests find the static workers ready
        tasks = [asyncio.create_task(b.health_loop()),
                 asyncio.create_task(resource_loop(config.service, config.resource_interval_s,
                                                   b.queues))]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await b.client.aclose()

    app = FastAPI(title=f"mattepipe {config.service}", lifespan=lifespan)
    app.state.balancer = b
    app.add_middleware(InternalAuth, token=token)
    add_request_logging(app, config.service)
    metrics_route(app)

    async def route(req: ForwardedRequest, request: Request) -> Response:
        with bind(job_id=req.job_id, task_id=req.task_id):
            return await b.forward(req, lane_of(request.headers.get(LANE_HEADER)))

    app.add_api_route(config.route, route, methods=["POST"],
                      responses={502: {"model": StageError}, 503: {"model": StageError}})

    async def batch_route(batch: StageBatch) -> Response:
        first = batch.requests[0]
        with bind(job_id=first.job_id, task_id=first.task_id):
            return await b.forward_batch(batch)

    app.add_api_route(config.route + BATCH_ROUTE_SUFFIX, batch_route, methods=["POST"],
                      response_model=StageBatchAnswer,
                      responses={502: {"model": StageError}, 503: {"model": StageError}})

    @app.post("/workers/heartbeat")
    async def heartbeat(hb: Heartbeat) -> dict[str, Any]:
        if not hb.url.startswith(("http://", "https://")):
            raise HTTPException(400, "url must be an http(s) URL")
        try:
            w = b.pool.heartbeat(hb.url, hb.worker_id, hb.capacity, hb.engine)
        except HeartbeatRefused as exc:
            raise HTTPException(409, str(exc)) from None
        b._gauges()
        return {"status": "ok", "url": w.url, "source": w.source}

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """Every worker's loaded engines (`GET /models` of each)."""
        return {"service": config.service, "workers": await b.to_every_worker("GET", "/models")}

    @app.post("/models/reload")
    async def reload_models(body: ModelReload | None = None) -> dict[str, Any]:
        """Every worker loads the named engines (default: all it has loaded) again from their
        files; the answer lists each worker's outcome."""
        payload = (body or ModelReload()).model_dump()
        return {"service": config.service,
                "workers": await b.to_every_worker("POST", "/models/reload", payload)}

    @app.get("/workers")
    async def workers() -> list[dict[str, Any]]:
        return [w.as_dict() for w in b.pool.workers.values()]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Always 200 while the balancer runs (liveness); `status` says whether it can serve."""
        n = b.pool.healthy_count()
        return {"status": "ok" if n else "degraded", "service": config.service,
                "healthy_workers": n, "workers": len(b.pool.workers), "queued": b.pool.waiting,
                "sync_queued": b.pool.sync_waiting}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "service": config.service, "route": config.route, "port": config.port,
            "static_workers": config.worker_urls, "queue_limit": config.queue_limit,
            "queue_wait_s": config.queue_wait_s, "max_attempts": config.max_attempts,
            "sync_limit": config.sync_limit, "sync_wait_s": config.sync_wait_s,
            "health_interval_s": config.health_interval_s, "stale_s": config.stale_s,
            "started_at": b.started_at, "queued": b.pool.waiting,
            "outstanding": sum(w.outstanding for w in b.pool.workers.values()),
        }

    return app
