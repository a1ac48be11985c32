"""Report memory benchmark: writing a job's report files from 5 000 and 50 000 task rows.

Each size runs in its own process: the rows (long nested names, metrics for every image, a
few failures) are seeded straight into a fresh SQLite file, then the gateway's report path
(`gateway.results.job_report.Reports.write`: keyset pages of rows, a `ReportWriter` in a
worker thread) writes report.json, report.csv and index.html. Peak Python allocations
(tracemalloc) and the growth of the process's peak RSS (VmHWM) over the state before the
write are recorded: both should stay flat whatever the number of rows.

    python -m bench.report_memory          # writes bench/last_report_memory.md
    python -m bench.report_memory one N DIR   # one measurement (JSON on stdout)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from gateway.db.database import Database
from gateway.db.tables import Base, Job, Task
from gateway.results.job_report import Reports
from shared.storage import Storage

__all__ = ["SIZES", "measure", "run", "seed_rows"]

ROOT = Path(__file__).resolve().parent.parent
SIZES = (5_000, 50_000)
MIB = 1024**2
NAME = "customer_archive_2024/studio_session_with_a_long_descriptive_folder_name/"


def long_path(i: int) -> str:
    """About 200 characters, as deep archive trees have them."""
    return f"{NAME}{i % 97:02d}/product_shot_{'variant_' * 8}{i:07d}_final_retouched.jpg"


def seed_rows(url: str, job_id: str, n: int, model: str = "classical") -> None:
    """A finished job of `n` tasks written straight into the SQLite file at `url` (sync)."""
    engine = create_engine(url.replace("+aiosqlite", ""))
    Base.metadata.create_all(engine)
    now = time.time()
    with engine.begin() as c:
        c.execute(insert(Job), [{"id": job_id, "state": "completed_with_errors", "total": n,
                                 "model": model, "created_at": now, "updated_at": now}])
        batch: list[dict[str, Any]] = []
        for i in range(n):
            failed = i % 50 == 0
            batch.append({
                "job_id": job_id, "path": long_path(i), "input": f"input/{job_id}/{i}",
                "state": "permanently_failed" if failed else "completed",
                "error": "worker died: " + "x" * 100 if failed else None,
                "metrics": None if failed else {model: {
                    "sad": i % 13 / 3, "mse": (i * 37 % 1000) / 1e4, "grad": 1.5, "conn": 2.5,
                    "coverage": 0.4, "uncertain": 0.02, "border_alpha": 0.1}},
                "queued_at": now, "matting_dispatched_at": now + 1, "matting_started_at": now + 1,
                "matting_finished_at": now + 2, "completed_at": now + 3, "updated_at": now,
            })
            if len(batch) == 5000:
                c.execute(insert(Task), batch)
                batch = []
        if batch:
            c.execute(insert(Task), batch)
    engine.dispose()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def measure(data_dir: Path, n: int) -> dict[str, float]:
    """Seed `n` rows, then write their report under tracemalloc; the figures."""
    storage = Storage(data_dir)
    storage.ensure_layout()
    url = f"sqlite+aiosqlite:///{data_dir / 'tasks.db'}"
    seed_rows(url, "job", n)
    db = await Database.connect(url)
    try:
        async with db.read() as s:
            job = await s.get(Job, "job")
        assert job is not None
        reports = Reports(db, storage)
        hwm_before = _rss_kib("VmHWM")
        tracemalloc.start()
        t0 = time.perf_counter()
        await reports.write(job, storage.job_reports("job"))
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        hwm_after = _rss_kib("VmHWM")
    finally:
        await db.close()
    sizes = {p.name: p.stat().st_size for p in storage.job_reports("job").iterdir()
             if p.is_file()}
    return {"rows": n, "peak_mib": peak / MIB, "rss_growth_mib": (hwm_after - hwm_before) / 1024,
            "seconds": seconds, "files_mib": sum(sizes.values()) / MIB}


def run() -> str:
    results = []
    for n in SIZES:
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            out = subprocess.run(
                [sys.executable, "-m", "bench.report_memory", "one", str(n), tmp],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                capture_output=True, text=True, check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, big = results
    lines = [
        "## Report memory (report.json, report.csv, index.html of a finished job)",
        "",
        "Task rows with ~200-character nested names seeded into SQLite; the report written by "
        "`Reports.write` (keyset pages of 500 rows, a streaming `ReportWriter` in a worker "
        "thread), each size in its own process. Peak = tracemalloc's peak of Python "
        "allocations during the write; RSS growth = VmHWM after minus before. "
        f"Machine: {os.cpu_count()} CPU cores.",
        "",
        "| rows | peak MiB | peak RSS growth MiB | report files MiB | time s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {int(r['rows'])} | {r['peak_mib']:.1f} | {r['rss_growth_mib']:.1f} | "
                     f"{r['files_mib']:.1f} | {r['seconds']:.1f} |")
    lines += [
        "",
        f"Ten times the rows: peak ×{big['peak_mib'] / small['peak_mib']:.2f} while the files "
        f"grow ×{big['files_mib'] / small['files_mib']:.1f}. The in-memory build this replaces "
        "(every row loaded, the three files built as bytes per download) measured +365 MiB at "
        "50 000 such rows.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["one"]:
        print(json.dumps(asyncio.run(measure(Path(sys.argv[3]), int(sys.argv[2])))))
    else:
        print(run())
