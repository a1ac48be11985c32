"""Blocking work in a thread of its own that an asyncio task can wait for and stop.

An upload's body read from the socket (`gateway.intake.splice`) and a download's body written
to it (`gateway.api.download`, `shared.serve.SendTap`) each run in one thread per request:
cancelled (the client gone, the gateway stopping), the task tells the thread to stop and waits
for it, so nothing touches the socket or the file after the task is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["CLIENT_ERRORS", "STOP_CHECK_S", "in_own_thread"]

STOP_CHECK_S = 0.25
"""Longest such a thread waits on its socket (full, or with nothing to read) before it looks
whether it was told to stop."""
CLIENT_ERRORS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT})
"""A socket's errors that mean the client has gone."""

_T = TypeVar("_T")


async def in_own_thread(work: Callable[[threading.Event], _T], name: str) -> _T:
    """`work(stop)` in a thread of its own; its result or exception here. Cancelled, it sets
    `stop`, waits for the thread to end (`work` looks at `stop` between its waits) and
    re-raises the cancellation: after this returns or raises, `work` is over."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()
    stop = threading.Event()

    def settle(result: tuple[BaseException | None, _T | None]) -> None:
        if done.done():
            return
        exc, value = result
        if exc is None:
            done.set_result(value)  # type: ignore[arg-type]
        else:
            done.set_exception(exc)

    def run() -> None:
        result: tuple[BaseException | None, _T | None]
        try:
            result = (None, work(stop))
        except BaseException as exc:  # handed to the loop, raised there
            result = (exc, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, result)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    cancelled = False
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            cancelled = True
            stop.set()
        except BaseException:
            break
    thread.join()  # it has only to return now
    if cancelled:
        done.exception()  # seen (the work's stop, most likely): the cancellation is the news
        raise asyncio.CancelledError
    return done.result()
