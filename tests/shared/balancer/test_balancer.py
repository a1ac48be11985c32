"""The balancer: its pool logic directly, then over HTTP with real and stand-in workers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from PIL import Image

from shared.balancer.app import BalancerConfig, create_balancer_app
from shared.balancer.pool import HeartbeatRefused, NoWorker, WorkerPool
from shared.internal_auth import MissingInternalToken
from shared.limits import MAX_WORKER_CAPACITY
from tests.support.servers import (
    INTERNAL_HEADERS,
    INTERNAL_TOKEN,
    ProcessServer,
    ThreadServer,
    free_port,
)
from tests.support.waiting import async_wait_for, wait_for

# --- the pool -------------------------------------------------------------------------------


def healthy_pool(n: int, capacity: int = 2, queue_limit: int = 4,
                 wait_s: float = 5.0) -> WorkerPool:
    pool = WorkerPool([f"http://w{i}" for i in range(n)], queue_limit, wait_s)
    for w in pool.workers.values():
        w.capacity = capacity
        pool.set_health(w, True, "")
    return pool


async def test_least_outstanding_worker_is_chosen() -> None:
    pool = healthy_pool(3, capacity=4)
    a = await pool.acquire()
    b = await pool.acquire()
    c = await pool.acquire()
    assert len({a.url, b.url, c.url}) == 3  # spread before anyone gets a second request
    pool.release(b)
    assert (await pool.acquire()).url == b.url  # b has the fewest in flight now
    assert (await pool.acquire({a.url, b.url})).url == c.url  # excluded ones are skipped


async def test_full_workers_are_skipped_and_the_queue_waits() -> None:
    pool = healthy_pool(1, capacity=2)
    w1 = await pool.acquire()
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await async_wait_for(lambda: pool.waiting == 1, what="the waiter queued")
    assert not waiter.done() and pool.waiting == 1
    pool.release(w1)
    assert (await asyncio.wait_for(waiter, 10)).url == w1.url
    assert pool.waiting == 0 and w1.outstanding == 2


async def test_queue_limit_and_wait_limit_answer_no_worker() -> None:
    pool = healthy_pool(1, capacity=1, queue_limit=1, wait_s=0.2)
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await async_wait_for(lambda: pool.waiting == 1, what="the waiter queued")
    with pytest.raises(NoWorker, match="queue is full"):
        await pool.acquire()
    with pytest.raises(NoWorker, match="busy"):
        await waiter


async def test_no_healthy_worker_fails_at_once_and_wakes_waiters() -> None:
    pool = healthy_pool(1, capacity=1)
    w = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await async_wait_for(lambda: pool.waiting == 1, what="the waiter queued")
    pool.set_health(w, False, "gone")
    with pytest.raises(NoWorker, match="no healthy"):
        await asyncio.wait_for(waiter, 10)
    with pytest.raises(NoWorker, match="no healthy"):
        await pool.acquire()


async def test_heartbeat_workers_go_stale_but_static_ones_stay() -> None:
    pool = healthy_pool(1)
    pool.heartbeat("http://hb:1/", "hb-1", 3, "identity")
    assert pool.workers["http://hb:1"].healthy and pool.workers["http://hb:1"].capacity == 3
    pool.workers["http://hb:1"].last_heartbeat = 0.0
    pool.drop_stale(10.0)
    assert list(pool.workers) == ["http://w0"]


# --- over HTTP ------------------------------------------------------------------------------


def post(url: str, **kw: Any) -> httpx.Response:
    """A call to a balancer, with the internal token."""
    return httpx.post(url, headers=INTERNAL_HEADERS, **kw)


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, headers=INTERNAL_HEADERS, **kw)


def balancer(urls: list[str], port: int | None = None, **kw: Any) -> ThreadServer:
    cfg = BalancerConfig(service="test_api", route="/matting", port=0, worker_urls=urls,
                         queue_limit=kw.pop("queue_limit", 10),
                         queue_wait_s=kw.pop("queue_wait_s", 30.0),
                         token=kw.pop("token", INTERNAL_TOKEN), **kw)
    return ThreadServer(create_balancer_app(cfg), port)


def stage_body(i: int = 1, inp: str = "input/j/a.png") -> dict[str, Any]:
    return {"task_id": i, "job_id": "j", "input": inp, "output": f"matting_output/j/{i}.png"}


def workers(url: str) -> dict[str, dict[str, Any]]:
    return {w["url"]: w for w in get(url + "/workers").json()}


class StandIn:
    """A worker speaking the contract with a scripted answer, for the paths real ones avoid."""

    def __init__(self, status: int = 200, retryable: bool = False) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0
        app = FastAPI()

        @app.get("/health")
        async def health() -> dict[str, str]:
            return {"status": "ok", "service": "matting", "worker_id": "stand-in"}

        @app.post("/matting")
        async def matting(body: dict[str, Any]) -> JSONResponse:
            self.calls += 1
            await asyncio.to_thread(self.gate.wait, 30)
            if status == 200:
                return JSONResponse({"status": "success", "output": body["output"],
                                     "worker_id": "stand-in",
                                     "timings": {"queued": 0, "started": 0, "finished": 0}})
            return JSONResponse({"status": "error", "detail": f"scripted {status}",
                                 "retryable": retryable}, status_code=status)

        self.server = ThreadServer(app)


def test_no_worker_means_503_with_retry_after() -> None:
    with balancer([]) as b:
        r = post(b.url + "/matting", json=stage_body())
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
        assert r.json()["retryable"] is True and "no healthy worker" in r.json()["detail"]
        h = get(b.url + "/health")
        assert h.status_code == 200 and h.json()["healthy_workers"] == 0
        assert post(b.url + "/matting", json={"task_id": 1}).status_code == 422


@contextlib.contextmanager
def one_held_worker(**balancer_kw: Any) -> Iterator[tuple[StandIn, ThreadServer]]:
    """A balancer with one worker of capacity 1 (joined by heartbeat) that holds every
    request until the test sets its gate."""
    slow = StandIn()
    slow.gate.clear()
    with slow.server, balancer([], **balancer_kw) as b:
        post(b.url + "/workers/heartbeat", json={"url": slow.server.url,
                                                        "worker_id": "slow", "capacity": 1})
        yield slow, b


def test_queue_full_then_served_when_a_slot_frees() -> None:
    with one_held_worker(queue_limit=1) as (slow, b), ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, b.url + "/matting", json=stage_body(1), timeout=30)
        wait_for(lambda: slow.calls == 1, what="first request at the worker")
        second = pool.submit(post, b.url + "/matting", json=stage_body(2), timeout=30)
        wait_for(lambda: get(b.url + "/info").json()["queued"] == 1, what="queued")
        third = post(b.url + "/matting", json=stage_body(3))
        assert third.status_code == 503 and "Retry-After" in third.headers
        assert "queue is full" in third.json()["detail"]
        slow.gate.set()
        assert first.result().status_code == 200
        assert second.result().status_code == 200  # waited, then got the slot


def test_queue_wait_over_is_503() -> None:
    with one_held_worker(queue_wait_s=0.2) as (slow, b), ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, b.url + "/matting", json=stage_body(1), timeout=30)
        wait_for(lambda: slow.calls == 1, what="first request at the worker")
        r = post(b.url + "/matting", json=stage_body(2))
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        slow.gate.set()
        assert first.result().status_code == 200


def test_retryable_errors_fail_over_and_refusals_are_relayed() -> None:
    broken, good = StandIn(500, retryable=True), StandIn(200)
    refusing = StandIn(400, retryable=False)
    with broken.server, good.server, balancer([broken.server.url, good.server.url]) as b:
        for i in range(4):
            r = post(b.url + "/matting", json=stage_body(i))
            assert r.status_code == 200 and r.json()["worker_id"] == "stand-in"
        seen = workers(b.url)
        assert seen[broken.server.url]["failures"] >= 1 and seen[good.server.url]["served"] == 4
    with refusing.server, balancer([refusing.server.url]) as b:
        r = post(b.url + "/matting", json=stage_body())
        assert r.status_code == 400 and r.json()["detail"] == "scripted 400"
        assert refusing.calls == 1  # not retried
    only_broken = StandIn(503, retryable=True)
    with only_broken.server, balancer([only_broken.server.url]) as b:
        r = post(b.url + "/matting", json=stage_body())
        assert r.status_code == 502 and r.json()["retryable"] is True


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "input/j").mkdir(parents=True)
    Image.new("RGB", (32, 24), (10, 200, 30)).save(tmp_path / "input/j/a.png")
    return tmp_path


@pytest.fixture
def real_workers(data_dir: Path) -> Iterator[list[ProcessServer]]:
    env = {"DATA_DIR": str(data_dir), "DEFAULT_MODEL": "identity", "MATTING_API_URL": ""}
    started: list[ProcessServer] = []
    try:
        for i in range(2):
            started.append(ProcessServer("matting_worker", env, ["--worker-id", f"w{i}"]))
        yield started
    finally:
        for w in started:
            w.stop()


def test_heartbeat_spread_and_failover_with_real_workers(real_workers: list[ProcessServer],
                                                        data_dir: Path) -> None:
    w0, w1 = real_workers
    port = free_port()
    w1.env["MATTING_API_URL"] = f"http://127.0.0.1:{port}"  # w1 is known by heartbeat only
    w0.start()
    w1.start()
    # Health checks only at start: a dead worker must be found by fail-over itself.
    with balancer([f"{w0.url}/"], port=port, health_interval_s=3600.0) as b:
        wait_for(lambda: w1.url in workers(b.url), what="heartbeat registration")
        assert get(b.url + "/health").json()["healthy_workers"] == 2
        seen = workers(b.url)
        assert seen[w0.url]["source"] == "static" and seen[w1.url]["source"] == "heartbeat"
        assert seen[w1.url]["id"] == "w1" and seen[w1.url]["capacity"] == 16

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda i: post(b.url + "/matting", json=stage_body(i), timeout=60),
                range(16)))
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["worker_id"] for a in answers} == {"w0", "w1"}
        assert sum(w["served"] for w in workers(b.url).values()) == 16

        w0.kill()
        for i in range(16, 22):
            r = post(b.url + "/matting", json=stage_body(i), timeout=60)
            assert r.status_code == 200 and r.json()["worker_id"] == "w1", r.text
        after = workers(b.url)[w0.url]
        assert after["healthy"] is False and after["failures"] >= 1
        assert (data_dir / "matting_output/j/21.png").is_file()


async def test_a_static_worker_heartbeating_under_another_name_counts_once() -> None:
    # Once this refreshed the static worker; now a heartbeat speaks for its own URL only
    # (a forged one could revive a dead worker): refused, and still counted once.
    pool = healthy_pool(1)
    pool.workers["http://w0"].worker_id = "w0"
    with pytest.raises(HeartbeatRefused, match="static worker"):
        pool.heartbeat("http://127.0.0.1:9001", "w0", 5, "classical")
    assert list(pool.workers) == ["http://w0"]
    assert pool.workers["http://w0"].capacity == 2


async def test_a_forged_heartbeat_does_not_revive_or_redirect_a_static_worker() -> None:
    pool = healthy_pool(1)
    w0 = pool.workers["http://w0"]
    w0.worker_id = "w0"
    pool.set_health(w0, False, "health check failed")
    with pytest.raises(HeartbeatRefused):
        pool.heartbeat("http://attacker:1", "w0", 64, "x")
    assert list(pool.workers) == ["http://w0"] and not w0.healthy and w0.url == "http://w0"
    with pytest.raises(NoWorker):  # nothing to send work to: not the attacker's URL
        await pool.acquire()
    # From its own URL it may come back (a restarted worker announcing itself).
    pool.heartbeat("http://w0", "w0", 3, "classical")
    assert w0.healthy and w0.capacity == 3


async def test_heartbeat_capacity_is_capped() -> None:
    pool = healthy_pool(0)
    w = pool.heartbeat("http://hb:1", "hb", 10**6, "x")
    assert w.capacity == MAX_WORKER_CAPACITY
    assert pool.heartbeat("http://hb:1", "hb", -5, "x").capacity == 1


def test_every_route_but_health_needs_the_internal_token() -> None:
    with StandIn().server as worker, balancer([worker.url]) as b:
        before = workers(b.url)
        hb = {"url": "http://127.0.0.1:9", "worker_id": "rogue", "capacity": 10**6}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": INTERNAL_TOKEN},
                        {"Authorization": f"Basic {INTERNAL_TOKEN}"}):
            for method, path, body in (("POST", "/matting", stage_body()),
                                       ("POST", "/workers/heartbeat", hb),
                                       ("GET", "/workers", None), ("GET", "/info", None),
                                       ("GET", "/metrics", None), ("GET", "/docs", None),
                                       ("GET", "/openapi.json", None)):
                r = httpx.request(method, b.url + path, json=body, headers=headers)
                assert r.status_code == 401, (path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["retryable"] is False and "token" in r.json()["detail"]
        assert httpx.get(b.url + "/health").status_code == 200
        assert workers(b.url).keys() == before.keys()  # the rogue was not registered
        # With the token, the capped heartbeat registers.
        r = post(b.url + "/workers/heartbeat", json=hb)
        assert r.status_code == 200, r.text
        assert workers(b.url)["http://127.0.0.1:9"]["capacity"] == MAX_WORKER_CAPACITY
        # A static worker's id from another URL: 409, and the static entry is untouched.
        r = post(b.url + "/workers/heartbeat",
                 json={"url": "http://127.0.0.1:8", "worker_id": "stand-in"})
        assert r.status_code == 409 and "static worker" in r.json()["detail"], r.text
        assert "http://127.0.0.1:8" not in workers(b.url)


def test_a_balancer_needs_a_token() -> None:
    cfg = BalancerConfig(service="t", route="/matting", port=0, worker_urls=[], queue_limit=1,
                         queue_wait_s=1.0)
    with pytest.raises(MissingInternalToken, match="INTERNAL_TOKEN"):
        create_balancer_app(cfg)
