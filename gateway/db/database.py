"""The task database as one object: its engines, its session factories and its ONE write lock.

The gateway is the database's sole writer (docs/DESIGN.md, "One image's way through"), and
SQLite takes one writer at a time. Every write transaction of the process therefore goes through
`Database.write()`, which holds a single asyncio lock around a `BEGIN IMMEDIATE` transaction:
writers queue on the lock in the event loop instead of on SQLite's busy handler, and a claim's
read-then-update can never interleave with another write. Reads take `Database.read()`, a
deferred-`BEGIN` session on a `query_only` engine, so `/status` polls run beside the writer
(WAL) and never wait for the lock. Nothing else in the gateway makes sessions or engines.

The hot reads (`/status`, task pages, the walk of a job's rows for its zip or report) take
`Database.snapshot(fn)` instead: `fn` runs a whole read transaction on a blocking SQLite
connection in one of SNAPSHOT_THREADS threads of its own. Under a busy scheduler the event
loop is the scarce thing: an aiosqlite read wakes it once per driver call (about ten times
for `/status`'s two queries), each wake-up queued behind the scheduler's callbacks, which
made `/status` p99 seconds during a 100 000-image job; a snapshot wakes it once, and builds
its ORM rows off the loop (README, "A 100 000-image job").

Because every write passes here, this is also where the gateway learns that something changed:
each committed write bumps `generation` and wakes `wait_for_write` (the live progress streams,
`gateway.api.events`, sleep on it instead of polling the database).

On Postgres (DATABASE_URL=postgresql+asyncpg://…) several gateway processes write at once, so
nothing may rely on the lock: writes are ordinary read-committed transactions, claims lock
their rows (`FOR UPDATE SKIP LOCKED`, `gateway.db.transitions`), quota checks take a per-key
advisory lock and singleton chores a session advisory lock (`gateway.db.locks`, `chores`).
The lock stays as a per-process queue (fewer connections, the same write signal); only
`generation` then counts this process's writes, not the other gateways'.

One more writer shares the gateway's database: an ingest of a big upload runs in a child
process of the gateway (`gateway.intake.ingest_process`) with a `Database` of its own. Its
writes are short (one batch of rows each); while one commits, the gateway's next write waits
in SQLite's busy handler (SQLITE_BUSY_TIMEOUT_MS) rather than on this lock, and reads never
wait. The gateway signals the child's progress with `note_outside_write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.locks import ChoreLocks
from gateway.db.tables import (
    create_engine,
    create_snapshot_engine,
    init_db,
    is_postgres,
    session_factory,
)
from shared.limits import SNAPSHOT_THREADS
from shared.settings import Settings

T = TypeVar("T")

__all__ = ["Database"]


class Database:
    """Owns the write engine, the read engine, their session factories and the write lock.

    `Database.open(settings)` (or `Database.connect(url)`) creates the tables if needed;
    `close()` disposes of both engines."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = create_engine(url)
        self._read_engine = create_engine(url, read_only=True)
        self._writes = session_factory(self._engine)
        self._reads = session_factory(self._read_engine)
        self._lock = asyncio.Lock()
        self._generation = 0
        self._written = asyncio.Event()
        self._job_ends: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary())
        """job id → the event its live streams hold (`job_end_signal`), while any does."""
        self.postgres = is_postgres(url)
        """Several gateways may share this database (`gateway.db.locks`)."""
        self.chores = ChoreLocks(self._engine if self.postgres else None)
        """Which singleton chores this gateway runs (all of them on SQLite)."""
        self._snapshot_engine = None if self.postgres else create_snapshot_engine(url)
        self._snapshots = (None if self._snapshot_engine is None
                           else sessionmaker(self._snapshot_engine, expire_on_commit=False))
        self._snapshot_pool: ThreadPoolExecutor | None = None

    @classmethod
    async def connect(cls, url: str) -> Database:
        """A database on `url`, migrated to the newest schema (`gateway.db.migrations`)."""
        db = cls(url)
        await init_db(db._engine)
        return db

    @classmethod
    async def open(cls, settings: Settings) -> Database:
        """The gateway's database (DATABASE_URL, else SQLite in DATA_DIR)."""
        return await cls.connect(settings.database)

    async def close(self) -> None:
        await self.chores.close()
        await self._engine.dispose()
        await self._read_engine.dispose()
        if self._snapshot_pool is not None:
            self._snapshot_pool.shutdown(wait=True)
            self._snapshot_pool = None
        if self._snapshot_engine is not None:
            self._snapshot_engine.dispose()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction (`BEGIN IMMEDIATE`), serialised with every other one of this
        process; committed when the block ends, rolled back when it raises."""
        async with self._lock:
            async with self._writes.begin() as s:
                yield s
            self._committed()

    def _committed(self) -> None:
        self._generation += 1
        woken, self._written = self._written, asyncio.Event()
        woken.set()

    def note_outside_write(self) -> None:
        """Another process wrote (the gateway's ingest child, `gateway.intake.ingest_process`):
        wake what waits for a write, as a write of our own would."""
        self._committed()

    def job_end_signal(self, job_id: str) -> asyncio.Event:
        """An event set when the scheduler closes `job_id` or `DELETE /jobs/{id}` cancels it
        (`note_jobs_ended`), shared by every holder, kept only while one holds it. A live
        progress stream takes it before its first read and rate-limits its reads
        (EVENTS_MIN_INTERVAL_S) with a wait that this cuts short, so a job's `end` leaves as
        the job is closed, not up to an interval later (issue 14: a client on the stream
        waited that long after its job). Per job: only that job's streams read early, once
        each."""
        ev = self._job_ends.get(job_id)
        if ev is None:
            ev = self._job_ends[job_id] = asyncio.Event()
        return ev

    def note_jobs_ended(self, job_ids: Iterable[str]) -> None:
        """These jobs reached a final state (after the commit that put them there)."""
        for job_id in job_ids:
            ev = self._job_ends.get(job_id)
            if ev is not None:
                ev.set()

    @property
    def generation(self) -> int:
        """How many write transactions committed since the process started."""
        return self._generation

    async def wait_for_write(self, seen: int, most_s: float) -> int:
        """Wait until a write commits after generation `seen` (at once if one already did),
        or `most_s` seconds; answers the generation now. A waiter costs no database work."""
        if self._generation == seen:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._written.wait(), most_s)
        return self._generation

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read snapshot on the read-only engine; never waits for the write lock."""
        async with self._reads() as s:
            yield s

    async def snapshot(self, fn: Callable[[Session], T]) -> T:
        """`fn(session)` in one read transaction, run whole in a reader thread (SQLite): the
        event loop waits once, however many statements `fn` runs. `fn` must only read, and
        return detached values (rows stay loaded: `expire_on_commit=False`). On Postgres it
        runs on the async read engine (`run_sync`): asyncpg has no thread hops to save."""
        if self._snapshots is None:
            async with self.read() as s:
                return await s.run_sync(fn)
        if self._snapshot_pool is None:
            self._snapshot_pool = ThreadPoolExecutor(SNAPSHOT_THREADS,
                                                     thread_name_prefix="db-snapshot")
        return await asyncio.get_running_loop().run_in_executor(
            self._snapshot_pool, self._run_snapshot, fn)

    @property
    def blocking_snapshots(self) -> bool:
        """Whether `snapshot_here` may be called (SQLite: a blocking engine of its own)."""
        return self._snapshots is not None

    def snapshot_here(self, fn: Callable[[Session], T]) -> T:
        """`snapshot` run in the calling thread, blocking (SQLite only: `blocking_snapshots`),
        for a thread that reads pages of rows between its own work: a download's zip reads
        its next page itself rather than beside itself in a reader thread, where the two
        threads took the GIL from each other at every row the driver stepped (issue 17, the
        download's fifth pass)."""
        return self._run_snapshot(fn)

    def _run_snapshot(self, fn: Callable[[Session], T]) -> T:
        assert self._snapshots is not None
        with self._snapshots() as s, s.begin():
            return fn(s)

    @property
    def writing(self) -> bool:
        """Whether a write transaction holds the lock now (for tests and diagnostics)."""
        return self._lock.locked()
