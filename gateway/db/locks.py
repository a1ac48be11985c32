"""Advisory locks on Postgres: which gateway runs a singleton chore, and per-key quota locks.

Several gateways on one Postgres share the jobs (README, "Postgres and several gateways"), but
some chores must run in one of them only: reclaiming expired leases and closing jobs, firing
webhooks, reconciling tus uploads, writing reports, resuming interrupted ingests. Each chore
has a fixed advisory lock key (`Chore`); a gateway runs the chore only while it holds that
key's *session* lock (`pg_try_advisory_lock`) on a connection of its own (`ChoreLocks`). The
first gateway to ask keeps the lock for as long as it lives; when it dies its connection
closes and Postgres releases the lock, so another gateway takes the chore over at its next
try (within a maintenance pass). On SQLite there is one gateway: it holds every chore.

Quota checks take a per-key *transaction* lock (`pg_advisory_xact_lock`, `lock_key`), so two
uploads racing for a key's last slot on two gateways are counted one after the other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from enum import IntEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

__all__ = [
    "GATEWAY_LOCK_SPACE", "JOB_LOCK_SPACE", "QUOTA_LOCK_SPACE", "UPLOAD_LOCK_SPACE", "Chore",
    "ChoreLocks", "lock_for_transaction", "lock_key",
]

log = logging.getLogger("gateway.db.locks")


class Chore(IntEnum):
    """One advisory lock key per singleton chore (a made-up 0x6d70 "mp" prefix, so that
    another application's keys on a shared Postgres are unlikely to collide)."""

    MIGRATE = 0x6D70_0000_0001
    """Schema migrations (`gateway.db.migrations.upgrade`), as a transaction lock."""
    MAINTENANCE = 0x6D70_0000_0002
    """Requeue due retries, reclaim expired leases, close finished jobs, fold the counters."""
    WEBHOOKS = 0x6D70_0000_0003
    """Fire finished jobs' webhooks (`gateway.pipeline.callbacks`)."""
    TUS = 0x6D70_0000_0004
    """Sweep expired tus uploads and reconcile cut ones (`gateway.intake.tus_uploads`)."""
    REPORTS = 0x6D70_0000_0005
    """Write missing report files (`gateway.results.job_report`)."""
    INGESTS = 0x6D70_0000_0006
    """Resume ingests whose gateway died (`gateway.state`)."""

    @property
    def key(self) -> int:
        return int(self.value)


QUOTA_LOCK_SPACE = 0x6D71
"""The high 16 bits of per-key quota lock keys (`lock_key`): apart from the chores'."""
GATEWAY_LOCK_SPACE = 0x6D73
"""The high 16 bits of per-gateway lock keys: each gateway holds its GATEWAY_ID's for as long
as it lives, so the maintenance chore can tell a dead gateway's leases from a live one's and
release them at once (`Scheduler.release_dead_gateways`) instead of after LEASE_S."""
UPLOAD_LOCK_SPACE = 0x6D74
"""The high 16 bits of per-upload lock keys: held by the gateway serving a request on a tus
upload (a PATCH, `POST /jobs`, the sweeper), so two gateways never write one upload at once
(`gateway.intake.tus_store.UploadLocks`)."""
JOB_LOCK_SPACE = 0x6D72
"""The high 16 bits of per-job lock keys: held by the gateway receiving or ingesting the job
(`gateway.state`), so a dead gateway's job is taken over by exactly one other."""


def lock_key(space: int, name: str) -> int:
    """A signed 64-bit advisory lock key for `name` in `space` (48 bits of its hash)."""
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=6).digest(), "big")
    key = (space << 48) | digest
    return key - (1 << 64) if key >= 1 << 63 else key


async def lock_for_transaction(s: AsyncSession, key: int) -> None:
    """Postgres: wait for the transaction lock `key` (released at commit or rollback).
    SQLite: nothing (its one writer at a time is lock enough)."""
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


class ChoreLocks:
    """This gateway's claim on the singleton chores: `await locks.holds(chore)` before each
    run. Postgres: session locks on one dedicated AUTOCOMMIT connection, kept once won (a
    cheap round trip each time checks that the connection, and so the lock, is still alive).
    SQLite (`engine` None): always True."""

    def __init__(self, engine: AsyncEngine | None) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._held: set[Chore] = set()
        self._mutex = asyncio.Lock()

    @property
    def shared(self) -> bool:
        """Whether other gateways may share the database (Postgres): the locks mean something."""
        return self._engine is not None

    @property
    def held(self) -> frozenset[Chore]:
        return frozenset(self._held) if self._engine is not None else frozenset(Chore)

    async def holds(self, chore: Chore) -> bool:
        """Whether this gateway runs `chore` now (taking its lock if it is free)."""
        if self._engine is None:
            return True
        async with self._mutex:
            try:
                conn = await self._connection()
                if chore in self._held:
                    await conn.execute(text("SELECT 1"))
                    return True
                got = await self._try(conn, chore.key)
            except Exception:
                await self._connection_failed()
                return False
            if got:
                self._held.add(chore)
                log.info("this gateway now runs the %s chore", chore.name.lower())
            return bool(got)

    async def take(self, key: int) -> bool:
        """Postgres: try the session lock `key` (e.g. one job's, `lock_key`) on this
        gateway's lock connection, kept until `give` or this process's end. SQLite: True."""
        if self._engine is None:
            return True
        async with self._mutex:
            try:
                return await self._try(await self._connection(), key)
            except Exception:
                await self._connection_failed()
                return False

    async def give(self, key: int) -> None:
        """Release a lock `take` got (nothing on SQLite, or when the connection is gone)."""
        if self._engine is None:
            return
        async with self._mutex:
            if self._conn is None:
                return
            try:
                await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except Exception:
                log.warning("chore locks: unlock failed; locks dropped", exc_info=True)
                await self._drop()

    async def _connection(self) -> AsyncConnection:
        """The lock connection (AUTOCOMMIT: session locks outlive every statement), opened
        on first use. Call with `_mutex` held."""
        if self._conn is None:
            assert self._engine is not None
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    @staticmethod
    async def _try(conn: AsyncConnection, key: int) -> bool:
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
        return bool(got)

    async def _connection_failed(self) -> None:
        log.warning("chore locks: the database connection failed; locks dropped", exc_info=True)
        await self._drop()

    async def _drop(self) -> None:
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:
                log.debug("closing a broken chore connection", exc_info=True)

    async def close(self) -> None:
        """Give every chore up (closing the connection releases its session locks)."""
        async with self._mutex:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is not None:
                try:
                    await conn.execute(text("SELECT pg_advisory_unlock_all()"))
                finally:
                    await conn.close()
