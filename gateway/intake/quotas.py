"""Per-key job quotas: concurrent jobs, jobs per hour, jobs per day (429 + Retry-After).

Counted from the jobs table, inside the same write transaction that creates the job, so a
restart keeps the counts, several gateway workers would agree, and two uploads racing for
the last slot cannot both get it. A key is the `api_key_hash` a job keeps; without API_KEY
every caller is the one anonymous key (hash NULL) and shares the same quota. Every job a key
created in the window counts, whatever became of it (a cancel does not give the slot back,
or create-and-cancel would bypass the hourly limit); an upload refused before it became a
job (413, 415, a cut connection) leaves no row and counts for nothing.

Resumable (tus) uploads are limited per key too, before any byte arrives
(`enforce_upload_limits`, in the transaction that creates the upload): how many unfinished
ones a key holds (MAX_OPEN_UPLOADS, 429) and the sum of their declared lengths
(MAX_OPEN_UPLOAD_BYTES, 413), so that nobody reserves the disk with uploads they never send.

On Postgres several gateways create jobs at once and read committed lets two transactions
count the same rows: each check first takes the key's advisory transaction lock
(`gateway.db.locks.lock_key`), held until the creating transaction commits, so the second
racer counts the first one's job. On SQLite the write lock already serialises them.
"""

from __future__ import annotations

import math
import time

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import repo
from gateway.db.locks import QUOTA_LOCK_SPACE, lock_for_transaction, lock_key
from gateway.errors import PayloadTooLarge, QuotaExceeded
from shared.settings import Settings
from shared.states import JobState
from shared.timing import QUOTA_RETRY_AFTER_S

__all__ = [
    "ACTIVE_JOB_STATES",
    "DAY_S",
    "HOUR_S",
    "QuotaExceeded",
    "check_quota",
    "enforce_quota",
    "enforce_upload_limits",
    "lock_quota",
]

ACTIVE_JOB_STATES = (JobState.UPLOADING.value, JobState.INGESTING.value, JobState.RUNNING.value)
"""A job holds one of its key's concurrent slots while it is in one of these states."""
HOUR_S = 3600.0
"""The hourly quota's sliding window."""
DAY_S = 86400.0
"""The daily quota's sliding window."""


async def lock_quota(s: AsyncSession, key_hash: str | None) -> None:
    """Serialise the key's quota checks until this transaction ends (Postgres; a no-op on
    SQLite). The anonymous key (NULL) has a lock of its own too."""
    await lock_for_transaction(s, lock_key(QUOTA_LOCK_SPACE, key_hash or "\0anonymous"))


async def _window(
    s: AsyncSession, key_hash: str | None, limit: int, window: float, now: float
) -> int | None:
    """Seconds until the key has room in a sliding window, or None if it has room now."""
    since = now - window
    count = await repo.count_jobs_since(s, key_hash, since)
    if count < limit:
        return None
    # One more fits once the (count - limit + 1) oldest jobs of the window have aged out.
    edge = await repo.nth_created_since(s, key_hash, since, count - limit)
    return max(1, math.ceil((edge if edge is not None else now) + window - now))


async def check_quota(
    s: AsyncSession, key_hash: str | None, settings: Settings, now: float | None = None
) -> QuotaExceeded | None:
    """The first quota the key is at (concurrent, hourly, daily) as the refusal to raise, or
    None. 0 means no limit."""
    now = time.time() if now is None else now
    if settings.max_concurrent_jobs > 0 or settings.max_jobs_per_hour > 0 or \
            settings.max_jobs_per_day > 0:
        await lock_quota(s, key_hash)
    if settings.max_concurrent_jobs > 0:
        active = await repo.count_jobs_in_states(s, key_hash, ACTIVE_JOB_STATES)
        if active >= settings.max_concurrent_jobs:
            return QuotaExceeded(
                f"too many jobs running at once: {settings.max_concurrent_jobs} allowed per key; "
                "wait for one to finish",
                QUOTA_RETRY_AFTER_S,
            )
    for limit, window, name in (
        (settings.max_jobs_per_hour, HOUR_S, "hour"),
        (settings.max_jobs_per_day, DAY_S, "day"),
    ):
        if limit <= 0:
            continue
        wait = await _window(s, key_hash, limit, window, now)
        if wait is not None:
            return QuotaExceeded(f"job quota reached: {limit} jobs per {name} per key", wait)
    return None


async def enforce_quota(s: AsyncSession, key_hash: str | None, settings: Settings) -> None:
    """`check_quota`, raised (429 with `Retry-After`); call it in the transaction creating
    the job."""
    over = await check_quota(s, key_hash, settings)
    if over is not None:
        raise over


async def enforce_upload_limits(
    s: AsyncSession, key_hash: str | None, length: int, settings: Settings,
    now: float | None = None,
) -> None:
    """Refuse a new tus upload of `length` declared bytes when the key already holds
    MAX_OPEN_UPLOADS live uploads not yet turned into jobs (429 + Retry-After) or when their
    declared bytes plus `length` pass MAX_OPEN_UPLOAD_BYTES (413). 0 means no limit."""
    now = time.time() if now is None else now
    if settings.max_open_uploads > 0 or settings.max_open_upload_bytes > 0:
        await lock_quota(s, key_hash)
    count, total = await repo.open_uploads(s, key_hash, now)
    if settings.max_open_uploads > 0 and count >= settings.max_open_uploads:
        raise QuotaExceeded(
            f"too many open uploads: {settings.max_open_uploads} allowed per key; finish, "
            "use or DELETE one first", QUOTA_RETRY_AFTER_S,
        )
    cap = settings.max_open_upload_bytes
    if cap > 0 and total + length > cap:
        raise PayloadTooLarge(
            f"open uploads would declare {total + length} bytes; {cap} allowed per key "
            f"({total} already declared)"
        )
