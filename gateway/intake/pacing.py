"""A floor under the speed of an upload body: idle timeout and minimum average rate.

uvicorn has no body-read timeout, so a client that sends its headers and then a byte every
now and then holds a connection, a buffer and, for `POST /upload`, one of its key's
MAX_CONCURRENT_JOBS slots (the job row is written before the body is read), for as long as it
likes. `paced` wraps the body iterator and raises `UploadStalled` (408) when no byte arrives
for UPLOAD_IDLE_TIMEOUT_S, or when, after UPLOAD_RATE_GRACE_S, the body's average rate since
its start drops below MIN_UPLOAD_RATE. The caller's cleanup then runs as for a cut connection.
`Pace` is that rule alone, for a body read outside the event loop (`gateway.intake.splice`,
which waits on the socket itself): one rule, two readers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from gateway.errors import UploadStalled
from shared.settings import Settings

__all__ = ["Pace", "paced"]


class Pace:
    """How long a body may take for its next byte, and the refusal once it took too long.

    The rate clock starts at the first `waiting` (when the body is first waited for); the idle
    clock at the latest `waiting` (the reader's own work between two waits, a disk write,
    counts against no one); `add` counts what arrived. One reader at a time (the event loop,
    or a reader thread)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = settings.upload_idle_timeout_s
        self.rate = settings.min_upload_rate
        self.grace = settings.upload_rate_grace_s
        self.clock = clock
        self.start: float | None = None
        self.since = 0.0
        """When the reader began its current wait for the socket."""
        self.received = 0

    def waiting(self) -> None:
        """The reader waits for the body again (after its start, or after handling a piece)."""
        self.since = self.clock()
        if self.start is None:
            self.start = self.since

    def add(self, n: int) -> None:
        self.received += n

    def due(self) -> tuple[float, str]:
        """Seconds left before the body must have moved on, and the reason to give when it has
        not (≤ 0: refuse now with `UploadStalled(reason)`)."""
        if self.start is None:
            self.waiting()
        assert self.start is not None
        now = self.clock()
        wait = self.since + self.idle - now
        reason = f"upload stalled: no body bytes for {self.idle:g} s"
        if self.rate > 0:
            # The average is at least `rate` until start + received / rate; grace comes first.
            due = self.start + max(self.grace, self.received / self.rate) - now
            if due < wait:
                wait = due
                reason = (f"upload too slow: below the minimum of {self.rate} bytes/s "
                          f"({self.received} bytes in {now - self.start:.0f} s)")
        return wait, reason


async def paced(
    body: AsyncIterator[bytes],
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """`body`'s chunks, or `UploadStalled` once it is idle or too slow (see the module)."""
    pace = Pace(settings, clock)
    while True:
        pace.waiting()
        wait, reason = pace.due()
        if wait <= 0:
            raise UploadStalled(reason)
        try:
            async with asyncio.timeout(wait):
                chunk = await anext(body)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(reason) from None
        pace.add(len(chunk))
        yield chunk
