"""FastAPI dependency aliases for route signatures: `db: ReadDB`, `gw: GW`, `settings: SettingsDep`,
`caller: CallerDep`; `job_or_404`, the one place a job is looked up for a caller.

There is no write-session dependency: a route writes through `gw.db.write()`, the one write
lock of the process (`gateway.db.database`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth import Caller, require_api_key
from gateway.db import repo
from gateway.db.tables import Job
from gateway.state import GatewayState
from shared.limits import MAX_ROW_OFFSET
from shared.settings import Settings
from shared.states import TaskState
from shared.storage import Storage

__all__ = [
    "GW",
    "After",
    "Caller",
    "CallerDep",
    "Limit",
    "Offset",
    "ReadDB",
    "SettingsDep",
    "StorageDep",
    "TaskStateFilter",
    "found_or_404",
    "get_read_db",
    "get_state",
    "job_or_404",
]


# The dependencies below are `async def` although they never wait: FastAPI runs a plain
# `def` dependency in its thread pool, and under a busy scheduler that hop (a thread, then a
# turn of the event loop) was a good part of a `/status` poll's time (README, "A 100 000-image
# job").
async def get_state(request: Request) -> GatewayState:
    gw: GatewayState = request.app.state.gw
    return gw


GW = Annotated[GatewayState, Depends(get_state)]


async def get_settings_dep(gw: GW) -> Settings:
    return gw.settings


async def get_storage(gw: GW) -> Storage:
    return gw.storage


async def get_read_db(gw: GW) -> AsyncIterator[AsyncSession]:
    """A read-only session: snapshot reads beside the scheduler's writes."""
    async with gw.db.read() as session:
        yield session


ReadDB = Annotated[AsyncSession, Depends(get_read_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CallerDep = Annotated[Caller, Depends(require_api_key)]
"""Who is asking (`gateway.api.auth`): the key's hash, label, admin or not."""


async def job_or_404(db: AsyncSession, job_id: str, caller: Caller) -> Job:
    """The job, if the caller may see it: its own, or any for the admin and on an open
    gateway. Another tenant's job answers exactly like an unknown id, so ids cannot be probed.
    Every route that names a job goes through here."""
    return found_or_404(await repo.get_job(db, job_id, owner=caller.owner), job_id)


def found_or_404(job: Job | None, job_id: str) -> Job:
    """`job_or_404`'s answer for a job already looked up with the caller's `owner` (the
    one-hop reads of `Database.snapshot`)."""
    if job is None:
        raise HTTPException(404, detail=f"unknown job {job_id!r}")
    return job


Limit = Annotated[int, Query(ge=1, le=1000, description="most rows in one page")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_OFFSET, description="rows to skip")]
After = Annotated[int | None, Query(
    ge=0, le=MAX_ROW_OFFSET,
    description="keyset cursor: only tasks whose id is above this (a page's `next_after`); "
                "costs the same at any depth, unlike `offset`")]


async def task_state_filter(
    state: Annotated[str | None, Query(description="only tasks in this state")] = None,
) -> str | None:
    """`?state=` of the task listings: a task state, or a 400 that lists them."""
    if state is not None and state not in {s.value for s in TaskState}:
        raise HTTPException(
            400,
            detail=f"unknown task state {state!r}; use one of: "
            + ", ".join(s.value for s in TaskState),
        )
    return state


TaskStateFilter = Annotated[str | None, Depends(task_state_filter)]
