"""Dynamic batching: concurrent requests share one engine call.

The rule for waiting is "only while it pays". A free runner takes what is queued at once,
unless requests are known to be on their way (announced: still being decoded), in which case
it waits up to `max_batch_delay_ms` for them. While a batch runs, new items pile up and form
the next one, so under load batches fill by themselves and an idle engine never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Batched", "Batcher"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Batched(Generic[R]):
    """One item's result and the batch it ran in (epoch seconds)."""

    value: R
    batch_size: int
    started: float
    finished: float


class Batcher(Generic[T, R]):
    """Feeds `fn` (run in a thread) lists of at most `max_batch_size` items.

    `concurrency` batches may run at once (1 for a GPU engine; more for CPU-bound stages
    that gain nothing from batching but should not serialise). Bound to the event loop of
    its first `submit`.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        max_batch_size: int,
        max_batch_delay_ms: float = 0.0,
        concurrency: int = 1,
        name: str = "",
    ) -> None:
        if max_batch_size < 1 or concurrency < 1:
            raise ValueError("max_batch_size and concurrency must be at least 1")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max(0.0, max_batch_delay_ms) / 1000.0
        self.concurrency = concurrency
        self.name = name
        self._pending: list[tuple[T, asyncio.Future[Batched[R]]]] = []
        self._announced = 0
        self._running = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self.batches_run = 0
        self.items_run = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return self._running

    def announce(self) -> None:
        """An item is on its way (being prepared); a free runner may wait a moment for it."""
        self._announced += 1

    def withdraw(self) -> None:
        """An announced item will not come (its preparation failed)."""
        self._announced = max(0, self._announced - 1)
        if self._wake is not None:
            self._wake.set()

    async def submit(self, item: T, announced: bool = False) -> Batched[R]:
        if announced:
            self._announced = max(0, self._announced - 1)
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._task is None or self._task.done():
            # A context of its own: else every batch would log with the first request's ids.
            self._task = loop.create_task(self._dispatch(), name=f"batcher-{self.name}",
                                          context=contextvars.Context())
        fut: asyncio.Future[Batched[R]] = loop.create_future()
        self._pending.append((item, fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._batch_tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for _, fut in self._pending:
            fut.cancel()
        self._pending.clear()

    async def _dispatch(self) -> None:
        assert self._wake is not None
        wake = self._wake
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending or self._running >= self.concurrency:
                wake.clear()
                await wake.wait()
            # Wait only for items known to be coming, and never past the delay.
            deadline = loop.time() + self.max_batch_delay_s
            while len(self._pending) < self.max_batch_size and self._announced > 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = [(i, f) for i, f in self._pending[: self.max_batch_size] if not f.done()]
            del self._pending[: self.max_batch_size]
            if not batch:
                continue
            self._running += 1
            task = loop.create_task(self._run(batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[Batched[R]]]]) -> None:
        started = time.time()
        try:
            results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} items"
                )
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            finished = time.time()
            for (_, fut), value in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(Batched(value, len(batch), started, finished))
        finally:
            self._running -= 1
            self.batches_run += 1
            self.items_run += len(batch)
            if self._wake is not None:
                self._wake.set()
