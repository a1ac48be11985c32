"""A million task rows across jobs: the gateway's hot queries timed, with their query plans.

`python bench/db_run.py ROWS` with PYTHONPATH set to the checkout under test (it imports only
that checkout's `gateway.db`, so `bench.scale` runs it for the baseline commit too, side by
side). It seeds ROWS task rows over 200 finished jobs and two running ones, and one more
running job of BENCH_DB_QUEUED tasks (default 100 000) all queued, as a big job is once its
archive is in. Then it times `/status` (a job's counts), `/jobs` (a page of jobs with their
counts), a claim of 64 tasks, the lease reclaim, the requeue of due retries, the result
cache's lookup of a batch's 32 keys, and a task page at depth 0 and 90 % (offset, and `after`
where the checkout has it). Every SQL statement each operation ran is captured and its
`EXPLAIN QUERY PLAN` printed. One JSON line out.

No ANALYZE is run: the gateway never runs one, so its SQLite plans from the schema alone, and
so does this bench. Until revision 0005 the bench ran ANALYZE, and its plans were not the
gateway's: the claim and the cache lookup looked cheap here while a real 100 000-image job
read its whole queue for every claim and every matted task for every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

JOBS = 200
RUNNING = 2
QUEUED = int(os.environ.get("BENCH_DB_QUEUED", "100000"))
"""Tasks of the big running job, all queued (`pending`)."""


def _seed(path: Path, rows: int) -> dict[str, Any]:
    """Rows straight into the file (after the gateway made its schema and triggers)."""
    con = sqlite3.connect(path)
    now = time.time()
    per = rows // (JOBS + RUNNING)
    jobs = [(f"job{j:04d}", "completed" if j < JOBS else "running", per, now - 10_000 + j)
            for j in range(JOBS + RUNNING)]
    con.executemany("INSERT INTO jobs (id, state, filename, upload_path, model, output, total, "
                    "created_at, updated_at, callback_done, callback_attempts, ingest_attempts,"
                    " format) VALUES (?, ?, '', '', 'identity', 'rgba', ?, ?, 0, 0, 0, 0, 'png')",
                    jobs)
    t0 = time.perf_counter()
    for jid, state, n, _ in jobs:
        def gen(jid: str = jid, state: str = state, n: int = n) -> Any:
            for i in range(n):
                if state == "completed":
                    st = "completed"
                else:  # a running job: most done, some queued, some leased, some failed
                    st = ("completed", "pending", "matting_done", "dispatched_matting",
                          "failed")[i % 5]
                lease = now - 5 if st == "dispatched_matting" else None
                yield (jid, f"d{i // 1000:03d}/img_{i:06d}.png", f"input/{jid}/{i}.png", st,
                       0, lease, 0.0, now, now, "matting" if st == "failed" else None,
                       f"{jid}-{i}", f"matting_output/{jid}/{i}.png")
        con.executemany("INSERT INTO tasks (job_id, path, input, state, retry_count, "
                        "lease_expires_at, next_attempt_at, queued_at, updated_at, "
                        "failed_stage, cache_key, matting_output) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", gen())
    big = f"job{JOBS + RUNNING:04d}"
    con.execute("INSERT INTO jobs (id, state, filename, upload_path, model, output, total, "
                "created_at, updated_at, callback_done, callback_attempts, ingest_attempts,"
                " format) VALUES (?, 'running', '', '', 'identity', 'rgba', ?, ?, 0, 0, 0, 0,"
                " 'png')", (big, QUEUED, now))
    con.executemany("INSERT INTO tasks (job_id, path, input, state, retry_count, "
                    "next_attempt_at, queued_at, updated_at) VALUES (?, ?, ?, 'pending', 0, "
                    "0.0, ?, ?)", ((big, f"d{i // 1000:03d}/img_{i:06d}.png",
                                    f"input/{big}/{i}.png", now, now) for i in range(QUEUED)))
    con.commit()
    con.close()
    return {"rows": per * len(jobs) + QUEUED, "queued": QUEUED,
            "seed_s": time.perf_counter() - t0}


async def _main(rows: int) -> dict[str, Any]:
    from sqlalchemy import event

    from gateway.db import repo, transitions
    from gateway.db.database import Database
    from shared.stages import Stage

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.db"
        db = await Database.connect(f"sqlite+aiosqlite:///{path}")
        await db.close()
        out.update(_seed(path, rows))
        db = await Database.connect(f"sqlite+aiosqlite:///{path}")
        captured: list[tuple[str, Any]] = []

        def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
                 many: bool) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
                captured.append((statement, params))

        for eng in (db._engine, db._read_engine):
            event.listen(eng.sync_engine, "before_cursor_execute", grab)
        running = f"job{JOBS:04d}"
        has_after = "after" in inspect.signature(repo.list_tasks).parameters
        per = rows // (JOBS + RUNNING)
        deep = int(per * 0.9)

        async def status() -> None:
            async with db.read() as s:
                await repo.get_job(s, running)
                await repo.job_counts(s, running)

        async def jobs_page() -> None:
            async with db.read() as s:
                page = await repo.list_jobs(s, 50, 0)
                await repo.job_counts_many(s, [j.id for j in page])
                await repo.count_jobs(s)

        async def claim() -> None:
            async with db.write() as s:
                await transitions.claim(s, Stage.MATTING, 64, time.time(), 60.0)
                raise _Rollback  # leave the rows as they were for the next repeat

        async def reclaim() -> None:
            async with db.write() as s:
                await transitions.reclaim_expired(s, time.time(), 3)
                await transitions.requeue_due(s, time.time())
                raise _Rollback

        async def cache_lookup() -> None:  # a batch's 32 keys, a few of them done already
            async with db.read() as s:
                await repo.done_outputs_for_keys(
                    s, [f"{running}-{i}" for i in range(0, 160, 5)])

        async def page(offset: int, after: int | None) -> None:
            async with db.read() as s:
                if after is None:
                    await repo.list_tasks(s, running, None, 100, offset)
                else:
                    await repo.list_tasks(s, running, None, 100, 0, after)  # type: ignore[call-arg]
                await repo.count_tasks(s, running, None)

        async with db.read() as s:
            first = (await repo.list_tasks(s, running, None, 1, 0))[0].id
        ops: list[tuple[str, Any]] = [
            ("status (one job's counts)", status),
            ("/jobs (50 jobs and their counts)", jobs_page),
            (f"claim 64 tasks (3 running jobs, one of {QUEUED} queued)", claim),
            ("lease reclaim + requeue", reclaim),
            ("result cache lookup (32 keys)", cache_lookup),
            ("task page, depth 0 (offset)", lambda: page(0, None)),
            (f"task page, depth {deep} (offset)", lambda: page(deep, None)),
        ]
        if has_after:
            ops.append((f"task page, depth {deep} (after)", lambda: page(0, first + deep)))
        results = []
        con = sqlite3.connect(path)
        for name, fn in ops:
            times = []
            for i in range(5):
                captured.clear()
                t0 = time.perf_counter()
                with contextlib.suppress(_Rollback):
                    await fn()
                times.append((time.perf_counter() - t0) * 1000)
                if i == 0:
                    plans = []
                    for stmt, params in captured:
                        try:
                            plan = con.execute("EXPLAIN QUERY PLAN " + stmt,
                                               params if not isinstance(params, list) else
                                               params[0]).fetchall()
                        except sqlite3.Error as exc:
                            plan = [(0, 0, 0, f"(no plan: {exc})")]
                        plans.append({"sql": " ".join(stmt.split())[:300],
                                      "plan": [r[3] for r in plan]})
            results.append({"op": name, "best_ms": min(times),
                            "median_ms": sorted(times)[len(times) // 2], "queries": plans})
        con.close()
        await db.close()
    out["ops"] = results
    return out


class _Rollback(Exception):
    """Raised inside a write block: the transaction is rolled back, the timing kept."""


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(int(sys.argv[1])))), flush=True)
