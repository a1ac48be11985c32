"""Waiting on a condition instead of sleeping a fixed time: one `wait_for` (and its twin for
async tests, which must not block the event loop the awaited work runs on)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx


class _Poll:
    """One wait's deadline and its last outcome."""

    def __init__(self, cond: object, timeout: float, what: str) -> None:
        self.cond, self.timeout, self.what = cond, timeout, what
        self.deadline = time.monotonic() + timeout
        self.value: Any = None
        self.error: BaseException | None = None

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """An `httpx.HTTPError` is "not yet" (a server still starting or restarting)."""
        self.value, self.error = None, None
        try:
            yield
        except httpx.HTTPError as exc:
            self.error = exc

    def ended(self) -> bool:
        """The condition holds; past the deadline, a clear failure instead of a hang."""
        if self.value:
            return True
        if time.monotonic() > self.deadline:
            last = f"last error: {self.error!r}" if self.error else f"last: {self.value!r}"
            raise AssertionError(f"{self.what or self.cond}: not reached in {self.timeout:g}s "
                                 f"({last})")
        return False


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "",
             interval: float = 0.05) -> Any:
    """Poll `cond` until it returns something truthy, and return that. The deadline is
    generous: it only turns a hang into a clear failure, never times the code under test."""
    poll = _Poll(cond, timeout, what)
    while True:
        with poll.attempt():
            poll.value = cond()
        if poll.ended():
            return poll.value
        time.sleep(interval)


async def async_wait_for(cond: Callable[[], Any | Awaitable[Any]],
                         timeout: float = 30.0,  # noqa: ASYNC109  (a deadline of polls)
                         what: str = "", interval: float = 0.01) -> Any:
    """`wait_for` in an async test: polls without blocking the loop; `cond` may be async."""
    poll = _Poll(cond, timeout, what)
    while True:
        with poll.attempt():
            value = cond()
            poll.value = await value if inspect.isawaitable(value) else value
        if poll.ended():
            return poll.value
        await asyncio.sleep(interval)
