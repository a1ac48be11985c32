"""A job's task rows a page at a time, each page its own short read (keyset paging).

A million-image job is never one result set: no read transaction stays open across the walk
(SQLite's WAL can checkpoint meanwhile) and memory holds one page. Whoever walks the pages
hands each one to a worker thread (file checks, report writing). Each page is read in a
snapshot (`Database.snapshot`): the query and the building of its ORM rows run in a reader
thread, so a download or report of a 100 000-image job costs the event loop one wake-up per
page, and `/status` polls beside it stay quick.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Task

__all__ = ["PAGE_ROWS", "task_pages"]

PAGE_ROWS = 500
"""Task rows per read when a report or a zip walks a job: memory holds one page (and the
reader thread holds the GIL while it builds a page's rows)."""


async def task_pages(db: Database, job_id: str, size: int = PAGE_ROWS
                     ) -> AsyncIterator[list[Task]]:
    """The job's tasks in report order (path, then id), `size` rows per page."""
    after: tuple[str, int] | None = None
    while True:
        page = await db.snapshot(functools.partial(
            repo.report_page_sync, job_id=job_id, after=after, limit=size))
        if not page:
            return
        yield page
        if len(page) < size:
            return
        after = (page[-1].path, page[-1].id)
