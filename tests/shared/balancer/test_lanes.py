"""The balancer's sync lane (`shared.lanes`): a sync request takes the next free worker slot
before bulk requests that waited longer, waits at most SYNC_QUEUE_WAIT_S, and a full lane
answers 503 with Retry-After while bulk work keeps its own queue. The pool directly, then over
HTTP with a stand-in worker that records the order it was called in."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from shared.balancer.pool import NoWorker, WorkerPool
from shared.lanes import LANE_HEADER, Lane, lane_of
from tests.shared.balancer.test_balancer import balancer, get, post, stage_body
from tests.support.servers import INTERNAL_HEADERS, ThreadServer
from tests.support.waiting import async_wait_for, wait_for

SYNC = {**INTERNAL_HEADERS, LANE_HEADER: "sync"}


def one_slot_pool(sync_limit: int = 2, sync_wait_s: float = 5.0) -> WorkerPool:
    pool = WorkerPool(["http://w0"], queue_limit=10, queue_wait_s=5.0, sync_limit=sync_limit,
                      sync_wait_s=sync_wait_s)
    w = pool.workers["http://w0"]
    w.capacity = 1
    pool.set_health(w, True, "")
    return pool


def test_the_header_names_the_lane() -> None:
    assert lane_of("sync") is Lane.SYNC and lane_of(" SYNC ") is Lane.SYNC
    assert lane_of(None) is Lane.BULK and lane_of("urgent") is Lane.BULK


async def test_a_sync_request_takes_the_next_slot_before_waiting_bulk_ones() -> None:
    pool = one_slot_pool()
    held = await pool.acquire()
    bulk = [asyncio.create_task(pool.acquire()) for _ in range(3)]
    await async_wait_for(lambda: pool.waiting == 3, what="bulk queued")
    sync = asyncio.create_task(pool.acquire(sync=True))
    await async_wait_for(lambda: pool.sync_waiting == 1, what="sync queued")
    pool.release(held)
    w = await asyncio.wait_for(sync, 10)
    assert w.url == "http://w0" and not any(t.done() for t in bulk)
    pool.release(w)  # then the bulk ones go on, one by one
    for _ in range(3):
        done, _ = await asyncio.wait(bulk, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        t = done.pop()
        bulk.remove(t)
        pool.release(t.result())
    assert pool.waiting == 0 and pool.sync_waiting == 0


async def test_a_full_sync_lane_and_a_long_wait_are_refused() -> None:
    pool = one_slot_pool(sync_limit=1, sync_wait_s=0.3)
    held = await pool.acquire()
    first = asyncio.create_task(pool.acquire(sync=True))
    await async_wait_for(lambda: pool.sync_waiting == 1, what="sync queued")
    with pytest.raises(NoWorker, match="sync lane is full"):
        await pool.acquire(sync=True)
    with pytest.raises(NoWorker, match=r"busy for 0\.3s"):
        await first
    assert pool.sync_waiting == 0
    bulk = asyncio.create_task(pool.acquire())  # the bulk queue is its own
    await async_wait_for(lambda: pool.waiting == 1, what="bulk queued")
    pool.release(held)
    pool.release(await asyncio.wait_for(bulk, 10))


async def test_without_a_lane_a_sync_request_never_waits() -> None:
    pool = one_slot_pool(sync_limit=0)
    await pool.acquire()
    with pytest.raises(NoWorker, match="sync lane is full"):
        await pool.acquire(sync=True)


class Recorder:
    """A worker of capacity 1 that records which task it was given, in order, and holds each
    call until `gate` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.order: list[int] = []
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok", "service": "matting", "worker_id": "rec"}

        @app.get("/info")
        async def info() -> dict[str, Any]:
            return {"capacity": 1, "stage": {"engine": "rec"}}

        @app.post("/matting")
        async def matting(body: dict[str, Any]) -> JSONResponse:
            self.order.append(int(body["task_id"]))
            await asyncio.to_thread(self.gate.wait, 30)
            return JSONResponse({"status": "success", "output": body["output"],
                                 "worker_id": "rec",
                                 "timings": {"queued": 0, "started": 0, "finished": 0}})

        self.server = ThreadServer(app)


@contextmanager
def held_worker(**kw: Any) -> Iterator[tuple[Recorder, ThreadServer]]:
    rec = Recorder()
    with rec.server, balancer([rec.server.url], **kw) as b:  # static: it never goes stale
        wait_for(lambda: get(b.url + "/health").json()["healthy_workers"] == 1,
                 what="the worker healthy")
        yield rec, b


def queued(b: ThreadServer) -> tuple[int, int]:
    h = get(b.url + "/health").json()
    return int(h["queued"]), int(h["sync_queued"])


def test_bulk_work_queued_does_not_delay_a_sync_request() -> None:
    with held_worker(sync_limit=4, sync_wait_s=30.0) as (rec, b), ThreadPoolExecutor(6) as ex:
        calls = [ex.submit(post, b.url + "/matting", json=stage_body(i), timeout=60)
                 for i in range(1, 5)]
        wait_for(lambda: len(rec.order) == 1 and queued(b) == (3, 0), what="bulk work queued")
        sync = ex.submit(httpx.post, b.url + "/matting", json=stage_body(99), headers=SYNC,
                         timeout=60)
        wait_for(lambda: queued(b) == (4, 1), what="the sync request queued")
        rec.gate.set()
        assert sync.result().status_code == 200
        assert all(c.result().status_code == 200 for c in calls)
        assert rec.order[1] == 99  # the next slot after the held one was the sync one


def test_a_full_sync_lane_answers_503_with_retry_after() -> None:
    with held_worker(sync_limit=1, sync_wait_s=30.0) as (rec, b), ThreadPoolExecutor(3) as ex:
        first = ex.submit(post, b.url + "/matting", json=stage_body(1), timeout=60)
        wait_for(lambda: rec.order == [1], what="the slot is taken")
        waiting = ex.submit(httpx.post, b.url + "/matting", json=stage_body(2), headers=SYNC,
                            timeout=60)
        wait_for(lambda: queued(b) == (1, 1), what="the lane holds one")
        r = httpx.post(b.url + "/matting", json=stage_body(3), headers=SYNC, timeout=60)
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
        assert "sync lane is full" in r.json()["detail"]
        rec.gate.set()
        assert first.result().status_code == 200 and waiting.result().status_code == 200
        info = get(b.url + "/info").json()
        assert info["sync_limit"] == 1 and info["sync_wait_s"] == 30.0
