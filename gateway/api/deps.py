"""FastAPI dependency aliases for route signatures: `db: DB`, `gw: GW`, `settings: SettingsDep`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.auth import require_api_key
from gateway.db import repo
from gateway.db.tables import Job
from gateway.state import GatewayState
from shared.settings import Settings
from shared.storage import Storage

__all__ = [
    "DB",
    "GW",
    "ApiKey",
    "ReadDB",
    "SettingsDep",
    "StorageDep",
    "get_db",
    "get_read_db",
    "get_state",
    "job_or_404",
]


def get_state(request: Request) -> GatewayState:
    gw: GatewayState = request.app.state.gw
    return gw


GW = Annotated[GatewayState, Depends(get_state)]


def get_settings_dep(gw: GW) -> Settings:
    return gw.settings


def get_storage(gw: GW) -> Storage:
    return gw.storage


async def get_db(gw: GW) -> AsyncIterator[AsyncSession]:
    """A write session; the route opens its transaction (`async with db.begin():`)."""
    async with gw.sessions() as session:
        yield session


async def get_read_db(gw: GW) -> AsyncIterator[AsyncSession]:
    """A read-only session: snapshot reads beside the scheduler's writes."""
    async with gw.read_sessions() as session:
        yield session


DB = Annotated[AsyncSession, Depends(get_db)]
ReadDB = Annotated[AsyncSession, Depends(get_read_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
ApiKey = Annotated[str | None, Depends(require_api_key)]


async def job_or_404(db: AsyncSession, job_id: str) -> Job:
    job = await repo.get_job(db, job_id)
    if job is None:
        raise HTTPException(404, detail=f"unknown job {job_id!r}")
    return job
