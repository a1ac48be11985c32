"""A job's task rows a page at a time, each page its own short read (keyset paging).

A million-image job is never one result set: no read transaction stays open across the walk
(SQLite's WAL can checkpoint meanwhile) and memory holds one page. Whoever walks the pages
hands each one to a worker thread (file checks, report writing), so the event loop only runs
the queries themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Task

__all__ = ["PAGE_ROWS", "task_pages"]

PAGE_ROWS = 500
"""Task rows per read when a report or a zip walks a job: building a page's ORM rows is the
only part on the event loop (tens of ms on a loaded machine)."""


async def task_pages(db: Database, job_id: str, size: int = PAGE_ROWS
                     ) -> AsyncIterator[list[Task]]:
    """The job's tasks in report order (path, then id), `size` rows per page."""
    after: tuple[str, int] | None = None
    while True:
        async with db.read() as s:
            page = await repo.report_page(s, job_id, after, size)
        if not page:
            return
        yield page
        if len(page) < size:
            return
        after = (page[-1].path, page[-1].id)
