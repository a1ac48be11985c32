"""Report files on disk: written once when a job ends, in memory that does not grow with it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tracemalloc
from pathlib import Path

from bench.report_memory import seed_rows
from gateway.db.database import Database
from gateway.db.tables import Job
from gateway.results.job_report import Reports
from gateway.results.report import REPORT_FILES
from shared.storage import Storage

MIB = 1024**2


async def _peak(tmp: Path, n: int) -> tuple[int, Path]:
    storage = Storage(tmp)
    storage.ensure_layout()
    url = f"sqlite+aiosqlite:///{tmp / 'tasks.db'}"
    seed_rows(url, "job", n)
    db = await Database.connect(url)
    try:
        async with db.read() as s:
            job = await s.get(Job, "job")
        assert job is not None
        tracemalloc.start()
        try:
            folder = await Reports(db, storage).final(job)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await db.close()
    return peak, folder


async def test_report_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    """A memory bound, not a timing: the in-memory build held ~7 KiB per such row (60 MiB
    for these 8 000), the streaming one a page of rows whatever the job's size."""
    small, _ = await _peak(tmp_path / "small", 1_000)
    big, folder = await _peak(tmp_path / "big", 8_000)
    assert big < 2 * small + 10 * MIB, (small / MIB, big / MIB)
    doc = json.loads((folder / "report.json").read_bytes())  # the files are whole
    assert doc["summary"]["items"] == 8_000 and len(doc["items"]) == 8_000
    assert doc["summary"]["failed"] == 160 and len(doc["summary"]["worst"]) == 10
    paths = [it["path"] for it in doc["items"]]
    assert paths == sorted(paths)  # report order: by path, across every page
    with (folder / "report.csv").open(newline="") as f:
        assert sum(1 for _ in csv.reader(f)) == 8_001
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no spool left


async def test_concurrent_callers_share_one_write(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.ensure_layout()
    url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    seed_rows(url, "job", 600)
    db = await Database.connect(url)
    try:
        async with db.read() as s:
            job = await s.get(Job, "job")
        assert job is not None
        reports = Reports(db, storage)
        folders = await asyncio.gather(*(reports.final(job) for _ in range(5)))
        assert len(set(folders)) == 1
        stamp = [(folders[0] / n).stat().st_mtime_ns for n in REPORT_FILES]
        await reports.final(job)  # complete: served as it is, not written again
        assert [(folders[0] / n).stat().st_mtime_ns for n in REPORT_FILES] == stamp
        text = (folders[0] / "report.csv").read_text()
        assert len(list(csv.DictReader(io.StringIO(text)))) == 600
    finally:
        await db.close()
