"""The task database on Postgres beside SQLite, side by side in one run (issue 13).

Both databases are made by the gateway itself (`Database.connect`: the migrations), on this
machine: SQLite in a temporary file (the baseline), Postgres in a throwaway cluster on
loopback (`tests.support.postgres`: Debian's `postgresql` package; without it the section
says why and measures nothing). Two figures per database:

- claim rate: running jobs of CLAIM_TASKS matting tasks; a gateway loop claims CLAIM_BATCH
  tasks (`transitions.claim`) and records their answers (`transitions.record_successes`),
  each in its own write transaction, until none is left; tasks per second claimed and
  recorded. Each gateway is a process of its own; on Postgres also two gateway processes
  claiming at once, which SQLite's one-writer design does not allow.
- `/status` latency: the real gateway app under uvicorn on that database, one running job
  of STATUS_ROWS tasks; POLLERS clients GET `/status/{job}` for PHASE_S seconds while another
  `Database` claims and records tasks of a second job (the write load of a busy pipeline);
  p50 and p99 from request sent to body read.

    python -m bench db_postgres      # writes bench/last_db_postgres.md
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.db import repo, transitions
from gateway.db.database import Database
from gateway.db.tables import Job
from shared.schemas import StageResult, Timings
from shared.settings import Settings
from shared.stages import Stage
from tests.support.postgres import PostgresUnavailable, fresh_database_url, running_postgres
from tests.support.servers import ThreadServer

__all__ = ["run"]

CLAIM_TASKS = int(os.environ.get("BENCH_PG_TASKS", "20000"))
CLAIM_JOBS = 4
CLAIM_BATCH = 64
"""Tasks per claim: what the scheduler claims with 16 slots and STAGE_BATCH_SIZE 4 … 64."""
STATUS_ROWS = int(os.environ.get("BENCH_PG_STATUS_ROWS", "50000"))
POLLERS = 10
PHASE_S = float(os.environ.get("BENCH_PG_STATUS_S", "10"))
INSERT_CHUNK = 5000
FAR = 4e9
"""A `next_attempt_at` never due: the status job's tasks stay where they are."""


async def _seed(db: Database, job_id: str, n: int, due: bool = True) -> None:
    async with db.write() as s:
        s.add(Job(id=job_id, state="running", total=n, created_at=time.time(),
                  model="identity"))
    for i in range(0, n, INSERT_CHUNK):
        rows = [{"job_id": job_id, "path": f"d{k // 1000:03d}/img_{k:06d}.png",
                 "input": f"input/{job_id}/{k}.png", "next_attempt_at": 0.0 if due else FAR}
                for k in range(i, min(n, i + INSERT_CHUNK))]
        async with db.write() as s:
            await repo.insert_tasks(s, rows)


def _result() -> StageResult:
    now = time.time()
    return StageResult(output="x", worker_id="bench",
                       timings=Timings(queued=now, started=now, finished=now, batch_size=1))


async def _gateway_loop(db: Database, by: str, only: str | None = None) -> int:
    """Claim and record until nothing is left (or, with `only`, until cancelled)."""
    done = 0
    result = _result()
    while True:
        async with db.write() as s:
            got = await transitions.claim(s, Stage.MATTING, CLAIM_BATCH, time.time(), 600.0,
                                          by=by)
        if only is not None:
            got = [c for c in got if c.job_id == only]
        if not got:
            return done
        async with db.write() as s:
            await transitions.record_successes(
                s, Stage.MATTING, [(c, result, f"mo/{c.id}.png") for c in got], time.time())
        done += len(got)


def _claimer(url: str, by: str, barrier: Any, out: Any) -> None:
    """One gateway process: connect, wait for the others, claim and record until done."""

    async def main() -> None:
        db = await Database.connect(url)
        barrier.wait()
        t0 = time.time()
        n = await _gateway_loop(db, by)
        out.put((n, t0, time.time()))
        await db.close()

    asyncio.run(main())


async def _claim_rate(urls: list[str]) -> float:
    """Tasks per second claimed and recorded by one gateway process per URL, all at once
    (each its own process, as gateways are: the clock runs from the moment all are
    connected to the last one's end)."""
    db = await Database.connect(urls[0])
    per = CLAIM_TASKS // CLAIM_JOBS
    for j in range(CLAIM_JOBS):
        await _seed(db, f"claim{j}", per)
    await db.close()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(urls)), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(u, f"gw{i}", barrier, out))
             for i, u in enumerate(urls)]
    for p in procs:
        p.start()
    got = [await asyncio.to_thread(out.get) for _ in procs]
    for p in procs:
        p.join()
    total = sum(int(n) for n, _, _ in got)
    assert total == per * CLAIM_JOBS, got
    return total / (float(max(e for _, _, e in got)) - float(min(t for _, t, _ in got)))


def _settings(data: Path, url: str) -> Settings:
    return Settings(_env_file=None, data_dir=data, database_url=url,  # type: ignore[call-arg]
                    matting_api_url="http://127.0.0.1:9", comparison_api_url="http://127.0.0.1:9",
                    internal_token="bench", api_key=None, result_cache=False)


async def _status_latency(url: str, data: Path) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, polls) of `/status` under a claiming gateway's write load."""
    load_db = await Database.connect(url)
    await _seed(load_db, "status", STATUS_ROWS, due=False)
    await _seed(load_db, "load", STATUS_ROWS)
    lat: list[float] = []
    with ThreadServer(create_app(_settings(data, url), idle_s=0.2)) as srv:
        load = asyncio.create_task(_gateway_loop(load_db, "load", only="load"))
        stop = time.perf_counter() + PHASE_S

        async def poller() -> None:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    r = await client.get("/status/status")
                    r.raise_for_status()
                    lat.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(poller() for _ in range(POLLERS)))
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
    await load_db.close()
    lat.sort()
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], len(lat)


@contextlib.contextmanager
def _tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mattepipe-bench-db-") as d:
        yield Path(d)


async def _measure() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with _tmp() as d, running_postgres() as pg:
        sqlite = f"sqlite+aiosqlite:///{d / 'claims.db'}"
        out["sqlite_claim"] = await _claim_rate([sqlite])
        out["pg_claim"] = await _claim_rate([fresh_database_url(pg)])
        two = fresh_database_url(pg)
        out["pg_claim_2"] = await _claim_rate([two, two])
        (d / "s").mkdir()
        (d / "p").mkdir()
        out["sqlite_status"] = await _status_latency(f"sqlite+aiosqlite:///{d / 's.db'}",
                                                     d / "s")
        out["pg_status"] = await _status_latency(fresh_database_url(pg), d / "p")
    return out


def run() -> str:
    head = ("## Postgres beside SQLite (issue 13)\n\n"
            "`python -m bench db_postgres`: the gateway's own database code on both, side by "
            "side in one run (module docstring: what is measured and how). SQLite is the "
            "baseline; ratios above 1 mean Postgres is faster.\n")
    try:
        m = asyncio.run(_measure())
    except PostgresUnavailable as exc:
        return head + f"\nNot measured: {exc}.\n"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    sc, pc, p2 = m["sqlite_claim"], m["pg_claim"], m["pg_claim_2"]
    (s50, s99, sn), (p50, p99, pn) = m["sqlite_status"], m["pg_status"]
    return head + f"""
Machine: {platform.node()}, {os.cpu_count()} CPUs (load average at the end {load}),
Postgres and the gateway on the same host (loopback). {CLAIM_TASKS} tasks in {CLAIM_JOBS}
jobs, {CLAIM_BATCH} per claim;
`/status` on a job of {STATUS_ROWS} tasks, {POLLERS} pollers for {PHASE_S:.0f} s under a
claiming gateway's writes.

| | SQLite (baseline) | Postgres | ratio |
|---|---:|---:|---:|
| claim + record, one gateway (tasks/s) | {sc:.0f} | {pc:.0f} | {pc / sc:.2f} |
| claim + record, two gateways at once (tasks/s) | — (one writer) | {p2:.0f} | {p2 / sc:.2f} |
| `/status` p50 (ms) | {s50:.1f} | {p50:.1f} | {s50 / p50:.2f} |
| `/status` p99 (ms) | {s99:.1f} | {p99:.1f} | {s99 / p99:.2f} |
| `/status` polls answered | {sn} | {pn} | {pn / max(1, sn):.2f} |
"""


if __name__ == "__main__":
    print(run())
