"""A floor under the speed of an upload body: idle timeout and minimum average rate.

uvicorn has no body-read timeout, so a client that sends its headers and then a byte every
now and then holds a connection, a buffer and, for `POST /upload`, one of its key's
MAX_CONCURRENT_JOBS slots (the job row is written before the body is read), for as long as it
likes. `paced` wraps the body iterator and raises `UploadStalled` (408) when no byte arrives
for UPLOAD_IDLE_TIMEOUT_S, or when, after UPLOAD_RATE_GRACE_S, the body's average rate since
its start drops below MIN_UPLOAD_RATE. The caller's cleanup then runs as for a cut connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from gateway.errors import UploadStalled
from shared.settings import Settings

__all__ = ["paced"]


async def paced(
    body: AsyncIterator[bytes],
    settings: Settings,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """`body`'s chunks, or `UploadStalled` once it is idle or too slow (see the module)."""
    idle = settings.upload_idle_timeout_s
    rate = settings.min_upload_rate
    grace = settings.upload_rate_grace_s
    start = clock()
    received = 0
    while True:
        wait = idle
        reason = f"upload stalled: no body bytes for {idle:g} s"
        if rate > 0:
            # The average is at least `rate` until start + received / rate; grace comes first.
            due = start + max(grace, received / rate) - clock()
            if due < wait:
                wait = due
                reason = (f"upload too slow: below the minimum of {rate} bytes/s "
                          f"({received} bytes in {clock() - start:.0f} s)")
        if wait <= 0:
            raise UploadStalled(reason)
        try:
            async with asyncio.timeout(wait):
                chunk = await anext(body)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadStalled(reason) from None
        received += len(chunk)
        yield chunk
