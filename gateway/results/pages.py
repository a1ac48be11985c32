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
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from gateway.db import repo
from gateway.db.database import Database
from gateway.db.tables import Task

__all__ = ["OUTPUT_PAGE_ROWS", "PAGE_ROWS", "output_pages", "output_pages_here", "task_pages",
           "unsized_pages"]

PAGE_ROWS = 500
"""Task rows per read when a report or a zip walks a job: memory holds one page (and the
reader thread holds the GIL while it builds a page's rows)."""
OUTPUT_PAGE_ROWS = 5000
"""`OutputRow`s per read when a finished job's zip walks it: three columns in a tuple
(~0.3 KB a row with its members' names), so ten times `PAGE_ROWS` rows for a tenth of the
event-loop wake-ups and thread hops."""

_Row = TypeVar("_Row", Task, repo.OutputRow)


async def task_pages(db: Database, job_id: str, size: int = PAGE_ROWS
                     ) -> AsyncIterator[list[Task]]:
    """The job's tasks in report order (path, then id), `size` rows per page."""
    async for page in _pages(db, repo.report_page_sync, job_id, size):
        yield page


async def output_pages(db: Database, job_id: str, size: int = OUTPUT_PAGE_ROWS
                       ) -> AsyncIterator[list[repo.OutputRow]]:
    """`task_pages`, each row only its path, state and id (`repo.OutputRow`)."""
    async for page in _pages(db, repo.output_page_sync, job_id, size):
        yield page


def output_pages_here(db: Database, job_id: str, size: int = OUTPUT_PAGE_ROWS
                      ) -> Iterator[list[repo.OutputRow]]:
    """`output_pages` read in the calling thread, blocking, each page when it is asked for
    (`Database.snapshot_here`: SQLite only)."""
    after: tuple[str, int] | None = None
    while True:
        page = db.snapshot_here(functools.partial(repo.output_page_sync, job_id=job_id,
                                                  after=after, limit=size))
        if page:
            yield page
        if (after := _after(page, size)) is None:
            return


async def unsized_pages(db: Database, job_id: str, size: int = OUTPUT_PAGE_ROWS
                        ) -> AsyncIterator[list[repo.OutputRow]]:
    """`output_pages` of the rows without recorded output sizes (`repo.unsized_page_sync`)."""
    async for page in _pages(db, repo.unsized_page_sync, job_id, size):
        yield page


async def _pages(db: Database, read: Callable[..., list[_Row]], job_id: str, size: int
                 ) -> AsyncIterator[list[_Row]]:
    after: tuple[str, int] | None = None
    while True:
        page = await db.snapshot(functools.partial(read, job_id=job_id, after=after,
                                                   limit=size))
        if page:
            yield page
        if (after := _after(page, size)) is None:
            return


def _after(page: list[_Row], size: int) -> tuple[str, int] | None:
    """The key the page after `page` starts after (keyset paging: path, then id); None when
    `page` was the last (short or empty)."""
    return None if len(page) < size else (page[-1].path, page[-1].id)
