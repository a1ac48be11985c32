"""The task database: SQLAlchemy 2 async on aiosqlite (the embedded default) or asyncpg
(Postgres, for several gateways: README, "Postgres and several gateways").

SQLite is tuned for one writer with many readers: WAL so `/status` reads never block the
scheduler, a busy timeout so a brief lock waits instead of failing, `BEGIN IMMEDIATE` for the
claim transactions so two claimers can never take the same row. Postgres needs none of that:
its row locks (`gateway.db.transitions`) and advisory locks (`gateway.db.locks`) do the job.

The schema is made by Alembic (`gateway.db.migrations`); a database made by `create_all`
before Alembic is brought to the first revision by `adopt_legacy` and stamped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    inspect,
    make_url,
)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.limits import SNAPSHOT_THREADS
from shared.states import JobState, TaskState
from shared.timing import SQLITE_BUSY_TIMEOUT_MS

__all__ = [
    "ADDED_COLUMNS", "ADDED_INDEXES", "TASK_COUNTS", "Base", "BigInt", "Job", "Task", "Upload",
    "UploadPart", "adopt_legacy", "create_counters", "create_engine", "create_snapshot_engine",
    "include_name", "init_db",
    "is_postgres", "now", "session_factory", "task_counts",
]


def now() -> float:
    return time.time()


BigInt = BigInteger().with_variant(Integer, "sqlite")
"""64 bits for what can pass 2^31 (ids, byte counts): BIGINT on Postgres, INTEGER on SQLite,
whose integers are 64-bit whatever the declared type (and whose row ids must be INTEGER)."""


def is_postgres(url_or_dialect: str) -> bool:
    """A `postgresql…://` URL or the `postgresql` dialect name."""
    return url_or_dialect.startswith("postgresql")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(32), default=JobState.UPLOADING.value)
    filename: Mapped[str] = mapped_column(String(1024), default="")
    upload_path: Mapped[str] = mapped_column(String(1024), default="")
    """DATA_DIR-relative path of the uploaded file."""
    model: Mapped[str] = mapped_column(String(512), default="classical")
    """One engine name, or several separated by commas (model against model)."""
    output: Mapped[str] = mapped_column(String(16), default="rgba")
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    total: Mapped[int] = mapped_column(BigInt, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When the first task was dispatched: the throughput clock starts here."""
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    callback_done: Mapped[bool] = mapped_column(default=False)
    """No more webhook attempts: delivered (`callback_error` None) or given up (its reason)."""
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Webhook attempts made so far, counted before each is sent (a crash mid-send counts)."""
    callback_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the webhook failed for good; the last attempt's error."""
    ingest_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Ingests started for this job; a restart redoes an interrupted one only while this is
    under MAX_RETRIES, so an archive that kills the gateway cannot do it for ever."""

    # --- output options (`shared.finishing`); defaults: a full-size transparent PNG -------
    format: Mapped[str] = mapped_column(String(8), default="png", server_default="png")
    """The cut-out's format: png, webp or avif."""
    max_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Longest side of the cut-out in px (scaled down, never up); None: the input's size."""
    background: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """`#rrggbb` composited under the cut-out; None: transparent."""
    crop: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Crop to the object plus this margin (percent of its box); None: no crop."""

    @property
    def cutout_suffix(self) -> str:
        """`.png`, `.webp` or `.avif`: how the job's cut-outs end (`shared.storage`)."""
        return f".{self.format or 'png'}"

    __table_args__ = (Index("ix_jobs_state", "state"),)


# `/jobs`, newest first (`repo.list_jobs`): the page read off the index, no sort of all jobs
Index("ix_jobs_created", Job.created_at.desc(), Job.id)
Index("ix_jobs_owner_created", Job.api_key_hash, Job.created_at.desc(), Job.id)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(4096))
    """Relative path inside the archive: every output name keeps it."""
    input: Mapped[str] = mapped_column(String(4096), default="")
    """DATA_DIR-relative path of the extracted image ('' when rejected before extraction)."""
    gt: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    """DATA_DIR-relative path of the ground-truth alpha, when the upload had one."""
    state: Mapped[str] = mapped_column(String(32), default=TaskState.PENDING.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    failed_stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """Where a failed task resumes: a `shared.stages.Stage` value."""

    # The per-stage columns are named in `shared.stages` (`Stage.columns`), not built by code.
    matting_output: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    compare_output: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The matting engine's confidence in the (first model's) cut-out, 0–1 (issue 16)."""
    fallback: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    """Set when a low-confidence cut-out was redone by FALLBACK_MODEL: from, model, the
    confidence that sent it there (and `error` if the fallback failed)."""

    queued_at: Mapped[float] = mapped_column(Float, default=now)
    matting_dispatched_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    matting_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    matting_finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    matting_worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    matting_batch_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comparison_dispatched_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    comparison_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    comparison_finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    comparison_worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=now, onupdate=now)
    cache_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The content-hash cache's key (`gateway.pipeline.result_cache`): the image's bytes, the
    job's models and options, and its tenant, hashed at ingest; None with RESULT_CACHE=0."""
    dispatched_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """GATEWAY_ID of the gateway whose claim leased the task (several gateways on one
    Postgres): a restarting gateway releases only its own leases, others' come back by lease."""

    # The task's zip members as they were when it completed (issue 17, README "The download,
    # third pass"): a finished job's zip is sized from their sums, not a `stat` per file.
    # None: not recorded (a row from before revision 0004, a failed task, an S3 store).
    output_files: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """How many of the task's outputs go into the zip (cut-outs and sheet)."""
    output_bytes: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    """Their byte sizes, summed."""
    output_name_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Their zip names' UTF-8 lengths, summed (each name is in a local header and a central
    record)."""

    __table_args__ = (
        # the result cache's lookup (`repo.done_outputs_for_keys`): a batch's keys in the
        # states that may be reused; on the key alone SQLite took a state index instead and
        # read every matted task of every job for each batch (revision 0005)
        Index("ix_tasks_cache_key_state", "cache_key", "state"),
        # the claim (`transitions.claim`): a job's first due tasks of a queue, in id order,
        # off the index alone; without it SQLite sorted the whole queue for each claim
        # (revision 0005). Serves (job_id, state) lookups too.
        Index("ix_tasks_job_queue", "job_id", "state", "id", "next_attempt_at"),
        Index("ix_tasks_claim", "state", "next_attempt_at"),
        Index("ix_tasks_lease", "state", "lease_expires_at"),
        Index("ix_tasks_job_path", "job_id", "path"),
        Index("ix_tasks_job", "job_id"),
    )


class Upload(Base):
    """A resumable (tus) upload; its offset is the file's size on disk, never a stored number
    (on object storage: its stored parts plus the tail object, `gateway.intake.tus_parts`)."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    length: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    filename: Mapped[str] = mapped_column(String(1024), default="")
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    multipart_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    """On object storage (STORAGE_URL=s3://…; gateway.intake.tus_parts): the S3 multipart
    upload this upload is; its parts are `UploadPart` rows."""


class UploadPart(Base):
    """One stored part of a tus upload on object storage (`gateway.intake.tus_parts`): a row
    per part, so recording one costs one insert whatever the upload's size. Every part but the
    last is `shared.limits.tus_part_bytes(length)` long, so their count is most of the offset."""

    __tablename__ = "upload_parts"

    upload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("uploads.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    """1 … 10 000, contiguous from 1."""
    etag: Mapped[str] = mapped_column(String(256))


def create_engine(url: str, *, read_only: bool = False) -> AsyncEngine:
    """`read_only`: an engine for the API's reads, with plain deferred `BEGIN`, so `/status`
    polls run beside the scheduler's writes (WAL) instead of queueing for the write lock.
    On Postgres both engines are plain ones (MVCC: readers never wait for writers)."""
    engine = create_async_engine(url, pool_pre_ping=False)
    if url.startswith("sqlite"):
        _sqlite_pragmas(engine.sync_engine, read_only)
        _keep_cancelled_connections(engine.sync_engine)
    return engine


def create_snapshot_engine(url: str) -> Engine:
    """A blocking (pysqlite) read-only engine on the same SQLite file, for
    `Database.snapshot`: a whole read transaction runs in one worker thread, so it costs the
    event loop one wake-up instead of one per driver call (aiosqlite hands every cursor call
    to its thread and back: about ten loop turns for a two-query `/status`)."""
    sync_url = make_url(url).set(drivername="sqlite")
    engine = sa_create_engine(sync_url, pool_size=SNAPSHOT_THREADS, max_overflow=0,
                              connect_args={"check_same_thread": False})
    _sqlite_pragmas(engine, read_only=True)
    return engine


def _sqlite_pragmas(engine: Engine, read_only: bool) -> None:
    """WAL, the busy timeout and our own `BEGIN` on every connection of a SQLite engine."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling would defeat BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _keep_cancelled_connections(engine: Engine) -> None:
    """An aiosqlite connection whose statement was cancelled is rolled back, not closed.

    SQLAlchemy takes a task's cancellation in the middle of a statement for a lost connection
    and closes it. An aiosqlite statement is never half-sent (it runs whole in the
    connection's own thread), but a SELECT cancelled between its execute and its fetch is
    left stepping, and SQLite closes a connection with a live statement only when that
    statement is freed: until the garbage collector got round to the cancelled task's
    frames, the closed connection kept its `BEGIN IMMEDIATE` and every other write of every
    process waited SQLITE_BUSY_TIMEOUT_MS for it, then failed (a `DELETE /jobs/{id}` during
    the job's ingest, which it cancels, hung 30 s). Kept, the connection is rolled back as
    after any other error, which ends the transaction and the statement with it."""

    @event.listens_for(engine, "handle_error")
    def _cancelled(ctx: Any) -> None:
        if isinstance(ctx.original_exception, asyncio.CancelledError):
            ctx.is_disconnect = False


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "jobs": {
        "ingest_attempts": "INTEGER NOT NULL DEFAULT 0",
        "callback_attempts": "INTEGER NOT NULL DEFAULT 0",
        "callback_error": "TEXT",
        # output options (shared.finishing)
        "format": "VARCHAR(8) NOT NULL DEFAULT 'png'",
        "max_size": "INTEGER",
        "background": "VARCHAR(16)",
        "crop": "FLOAT",
    },
    "tasks": {
        "cache_key": "VARCHAR(64)",  # the content-hash cache (gateway.pipeline.result_cache)
        # confidence and fallback (issue 16)
        "confidence": "FLOAT",
        "fallback": "JSON",
    },
    "uploads": {
        "multipart_id": "VARCHAR(1024)",  # tus on object storage (gateway.intake.tus_parts)
    },
}
"""Columns added after the first release: `create_all` makes missing tables but never alters
an existing one, so a database file from an older version gets them here (idempotent)."""


ADDED_INDEXES: dict[str, str] = {
    # the result cache's lookup (`gateway.pipeline.result_cache`) on a column older databases
    # gain through ADDED_COLUMNS: `create_all` makes its index only with a new table
    # (revision 0005 replaces it with `ix_tasks_cache_key_state`)
    "ix_tasks_cache_key": "tasks (cache_key)",
    # keyset paging of a job's tasks by id (`repo.list_tasks` with `after`): (job_id, rowid)
    "ix_tasks_job": "tasks (job_id)",
    # `/jobs`, newest first (`repo.list_jobs`): the page read off the index, no sort of all jobs
    "ix_jobs_created": "jobs (created_at DESC, id)",
    "ix_jobs_owner_created": "jobs (api_key_hash, created_at DESC, id)",
}
"""Indexes added after the first release (`create_all` adds none to an existing table)."""

TASK_COUNTS = "task_counts"
"""Tasks per (job, state), kept by triggers on `tasks`: `/status`, `/jobs`, the task pages'
totals and the job closer read a handful of rows instead of counting every task of a job.
Triggers, not application code, keep it: every write path (claims, answers, ingest, cancel,
reclaim, a test seeding rows) moves it in the same statement that moves the task, so it can
never drift from the rows.

On SQLite one row per (job, state), moved by row triggers (one writer at a time: no
contention). On Postgres the rows are *deltas* (no key), appended by statement triggers from
the statement's transition tables: several gateways moving tasks of one job at once would
otherwise queue on, and deadlock over, the same counter rows. A count is the sum of its rows
on both dialects (`gateway.db.repo`); `compact_counts` folds the deltas now and then."""

task_counts = Table(
    TASK_COUNTS, MetaData(),  # its own MetaData: made with its triggers, never by create_all
    Column("job_id", String(32), primary_key=True),
    Column("state", String(32), primary_key=True),
    Column("n", BigInt, nullable=False),
)
"""The counters as a Core table for queries (`gateway.db.repo`): sum `n` per (job, state)."""

_TASK_COUNT_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TASK_COUNTS} (job_id VARCHAR(32) NOT NULL, "
    "state VARCHAR(32) NOT NULL, n INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job_id, state)) "
    "WITHOUT ROWID",
    f"""CREATE TRIGGER IF NOT EXISTS tasks_count_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO {TASK_COUNTS} (job_id, state, n) VALUES (NEW.job_id, NEW.state, 1)
        ON CONFLICT (job_id, state) DO UPDATE SET n = n + 1; END""",
    f"""CREATE TRIGGER IF NOT EXISTS tasks_count_update AFTER UPDATE OF state, job_id ON tasks
        WHEN OLD.state IS NOT NEW.state OR OLD.job_id IS NOT NEW.job_id BEGIN
        UPDATE {TASK_COUNTS} SET n = n - 1 WHERE job_id = OLD.job_id AND state = OLD.state;
        INSERT INTO {TASK_COUNTS} (job_id, state, n) VALUES (NEW.job_id, NEW.state, 1)
        ON CONFLICT (job_id, state) DO UPDATE SET n = n + 1; END""",
    f"""CREATE TRIGGER IF NOT EXISTS tasks_count_delete AFTER DELETE ON tasks BEGIN
        UPDATE {TASK_COUNTS} SET n = n - 1 WHERE job_id = OLD.job_id AND state = OLD.state;
        END""",
)

_PG_DELTAS = {
    "insert": ("NEW TABLE AS new_rows",
               "SELECT job_id, state, count(*) FROM new_rows GROUP BY job_id, state"),
    "update": ("OLD TABLE AS old_rows NEW TABLE AS new_rows",
               "SELECT job_id, state, sum(d) FROM (SELECT job_id, state, -1 AS d FROM old_rows "
               "UNION ALL SELECT job_id, state, 1 FROM new_rows) x GROUP BY job_id, state "
               "HAVING sum(d) <> 0"),
    "delete": ("OLD TABLE AS old_rows",
               "SELECT job_id, state, -count(*) FROM old_rows GROUP BY job_id, state"),
}
"""Postgres: per statement kind, its transition tables and the deltas it appends."""


def _pg_task_count_ddl() -> list[str]:
    ddl = [f"CREATE TABLE IF NOT EXISTS {TASK_COUNTS} (job_id VARCHAR(32) NOT NULL, "
           "state VARCHAR(32) NOT NULL, n BIGINT NOT NULL)",
           f"CREATE INDEX IF NOT EXISTS ix_{TASK_COUNTS}_job ON {TASK_COUNTS} (job_id, state)"]
    for kind, (refs, deltas) in _PG_DELTAS.items():
        fn = f"tasks_count_{kind}_fn"
        ddl.append(f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO {TASK_COUNTS} (job_id, state, n) {deltas}; RETURN NULL; END $$""")
        ddl.append(f"DROP TRIGGER IF EXISTS tasks_count_{kind} ON tasks")
        ddl.append(f"CREATE TRIGGER tasks_count_{kind} AFTER {kind.upper()} ON tasks "
                   f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    return ddl


def create_counters(conn: Connection) -> None:
    """The counters table and its triggers for the connection's dialect (idempotent); a
    database whose tasks predate the counters has them counted once, in this transaction."""
    fresh = not inspect(conn).has_table(TASK_COUNTS)
    ddl = _pg_task_count_ddl() if is_postgres(conn.dialect.name) else _TASK_COUNT_DDL
    for stmt in ddl:
        conn.exec_driver_sql(stmt)
    if fresh:
        conn.exec_driver_sql(f"INSERT INTO {TASK_COUNTS} (job_id, state, n) "
                             "SELECT job_id, state, count(*) FROM tasks GROUP BY job_id, state")


def include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """What Alembic compares with `Base.metadata`: not the counters (their own DDL)."""
    return not (type_ == "table" and name == TASK_COUNTS)


def _add_missing_columns(conn: Connection) -> None:
    have = inspect(conn)
    for table, columns in ADDED_COLUMNS.items():
        present = {c["name"] for c in have.get_columns(table)}
        for name, ddl in columns.items():
            if name not in present:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")
    have = inspect(conn)  # afresh: the columns just added
    for name, target in ADDED_INDEXES.items():
        table, _, cols = target.partition(" ")
        present = {c["name"] for c in have.get_columns(table)}
        wanted = {c.strip().removesuffix(" DESC") for c in cols.strip("()").split(",")}
        if wanted <= present:
            # (a table of some very old layout without the column simply goes unindexed)
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {target}")
    create_counters(conn)


def adopt_legacy(conn: Connection) -> None:
    """Bring a database made by `create_all` before Alembic (no `alembic_version`) to the
    first revision: missing tables, the columns and indexes added since, the counters. The
    caller stamps it `0001` afterwards (`gateway.db.migrations`)."""
    Base.metadata.create_all(conn)
    _add_missing_columns(conn)


async def init_db(engine: AsyncEngine) -> None:
    """The schema at the newest revision: Alembic's `upgrade head` in one transaction
    (`gateway.db.migrations.upgrade`), a pre-Alembic database adopted first."""
    from gateway.db.migrations import upgrade

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)
