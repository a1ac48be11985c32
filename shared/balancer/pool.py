"""The balancer's view of its workers: health, load, and the wait for a free one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared.errors import Busy, MattepipeError
from shared.limits import MAX_WORKER_CAPACITY
from shared.logs import debug_log

__all__ = ["DEFAULT_CAPACITY", "HeartbeatRefused", "NoWorker", "WorkerPool", "WorkerState"]

log = logging.getLogger("mattepipe.balancer")

DEFAULT_CAPACITY = 8
"""Concurrent requests for a static worker until it tells us its own capacity."""


@dataclass
class WorkerState:
    url: str
    source: Literal["static", "heartbeat"]
    worker_id: str = ""
    healthy: bool = False
    outstanding: int = 0
    capacity: int = DEFAULT_CAPACITY
    last_seen: float | None = None
    """Epoch of the last good health check or heartbeat."""
    last_heartbeat: float | None = None
    served: int = 0
    failures: int = 0
    engine: str = ""
    detail: str = ""
    last_pick: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("last_pick")
        d["id"] = d.pop("worker_id")
        return d


class NoWorker(Busy):
    """No worker can take the request now; answered 503 with Retry-After."""


class HeartbeatRefused(MattepipeError):
    """A heartbeat that would take over a static worker's identity from another URL."""


class WorkerPool:
    """Least-outstanding choice among healthy workers below capacity, with a bounded queue.

    Everything runs on one event loop, so state changes need no lock; waiters sleep on an
    event that is replaced on every change (asyncio wakes them in arrival order).
    """

    def __init__(self, static_urls: list[str], queue_limit: int, queue_wait_s: float,
                 sync_limit: int = 0, sync_wait_s: float = 0.0) -> None:
        self.workers: dict[str, WorkerState] = {}
        for url in static_urls:
            u = url.strip().rstrip("/")
            if u:
                self.workers[u] = WorkerState(url=u, source="static")
        self.queue_limit = queue_limit
        self.queue_wait_s = queue_wait_s
        self.waiting = 0
        self.sync_limit, self.sync_wait_s = sync_limit, sync_wait_s
        """The sync lane (`shared.lanes`): its own queue bound and wait (sync_limit 0: a sync
        request that would have to wait is refused at once)."""
        self.sync_waiting = 0
        """Sync-lane requests waiting now: while any waits, bulk ones take no free slot."""
        self._changed = asyncio.Event()
        self._picks = itertools.count(1)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- membership and health ---------------------------------------------------------
    def heartbeat(self, url: str, worker_id: str, capacity: int, engine: str) -> WorkerState:
        """Register or refresh the worker at `url`; its capacity is capped at
        `MAX_WORKER_CAPACITY`. A heartbeat speaks for its own URL only: one that names a
        static worker's id from another URL is `HeartbeatRefused` (it would revive a worker
        the health checks found dead, or count one worker twice)."""
        u = url.rstrip("/")
        w = self.workers.get(u)
        if w is None and worker_id:
            other = next((x for x in self.workers.values()
                          if x.worker_id == worker_id and x.source == "static"), None)
            if other is not None:
                raise HeartbeatRefused(
                    f"worker id {worker_id!r} belongs to a static worker at another URL; a "
                    "heartbeat must come from the URL in WORKER_URLS (set PUBLIC_URL to it)")
        if w is None:
            w = self.workers[u] = WorkerState(url=u, source="heartbeat")
            log.info("worker %s (%s) registered by heartbeat", worker_id, u)
        now = time.time()
        w.worker_id, w.engine = worker_id, engine
        w.capacity = min(MAX_WORKER_CAPACITY, max(1, capacity))
        w.last_heartbeat = w.last_seen = now
        # A worker heartbeats only once its engine is loaded, so it is ready for work.
        self.set_health(w, True, "")
        return w

    def set_health(self, w: WorkerState, healthy: bool, detail: str) -> None:
        if healthy:
            w.last_seen = time.time()
        if w.healthy != healthy:
            level = logging.INFO if healthy else logging.WARNING
            log.log(level, "worker %s (%s) is now %s%s", w.worker_id or "?", w.url,
                    "healthy" if healthy else "unhealthy", f": {detail}" if detail else "")
        w.healthy, w.detail = healthy, detail
        self._notify()

    def drop_stale(self, stale_s: float) -> None:
        cutoff = time.time() - stale_s
        for url, w in list(self.workers.items()):
            if w.source == "heartbeat" and (w.last_heartbeat or 0.0) < cutoff:
                log.warning("worker %s (%s) dropped: no heartbeat for %.0fs", w.worker_id, url,
                            stale_s)
                del self.workers[url]
                self._notify()

    def healthy_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.healthy)

    # --- choosing ----------------------------------------------------------------------
    def _candidates(self, exclude: set[str]) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.healthy and w.url not in exclude]

    def _pick(self, exclude: set[str], sync: bool = False) -> WorkerState | None:
        if self.sync_waiting and not sync:
            return None  # the sync lane goes first: the next free slot is a sync request's
        free = [w for w in self._candidates(exclude) if w.outstanding < w.capacity]
        if not free:
            return None
        w = min(free, key=lambda x: (x.outstanding, x.last_pick))
        w.outstanding += 1
        w.last_pick = next(self._picks)
        return w

    async def acquire(self, exclude: set[str] | None = None, sync: bool = False) -> WorkerState:
        """A worker with a free slot; waits in the queue up to `queue_wait_s` for one.

        `sync`: the request is in the sync lane (`POST /api/remove`): it waits in its own
        queue (`sync_limit`, `sync_wait_s`) and takes the next free slot before any bulk
        request does; with `sync_limit` 0 there is no lane and it is refused when it would
        wait."""
        exclude = exclude or set()
        w = self._pick(exclude, sync)
        if w is not None:
            return w
        if not self._candidates(exclude):
            raise NoWorker("no healthy worker available")
        if sync:
            if self.sync_waiting >= self.sync_limit:
                raise NoWorker(f"all workers busy and the sync lane is full ({self.sync_limit} "
                               "waiting; SYNC_QUEUE_LIMIT)")
        elif self.waiting - self.sync_waiting >= self.queue_limit:
            raise NoWorker(f"all workers busy and the queue is full ({self.queue_limit} waiting)")
        loop = asyncio.get_running_loop()
        wait_s = self.sync_wait_s if sync else self.queue_wait_s
        deadline = loop.time() + wait_s
        self.waiting += 1
        self.sync_waiting += sync
        debug_log.debug("queued: waiting=%d (sync %d)", self.waiting, self.sync_waiting)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise NoWorker(f"all workers busy for {wait_s:g}s")
                changed = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
                w = self._pick(exclude, sync)
                if w is not None:
                    return w
                if not self._candidates(exclude):
                    raise NoWorker("no healthy worker available")
        finally:
            self.waiting -= 1
            self.sync_waiting -= sync
            if sync:
                self._notify()  # bulk waiters may take a slot again

    def release(self, w: WorkerState) -> None:
        w.outstanding = max(0, w.outstanding - 1)
        self._notify()
