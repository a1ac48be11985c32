"""`/health` (open, for probes) and `/metrics` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import GW, ReadDB
from gateway.db import repo
from shared.responses import Health
from shared.states import JobState, TaskState

__all__ = ["open_router", "router"]

open_router = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@open_router.get("/health", response_model=Health)
async def health(db: ReadDB, gw: GW) -> Health:
    """Ready when the database answers; says whether the scheduler loops are alive."""
    await repo.ping(db)
    loops = gw.scheduler.running
    return Health(status="ok" if loops else "degraded", service="gateway", scheduler=loops)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition",
                     "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(db: ReadDB, gw: GW) -> Response:
    """Counters and gauges of the gateway, for Prometheus."""
    tasks, jobs = await repo.global_counts(db)
    gw.metrics.set_counts(tasks, jobs, [s.value for s in TaskState], [s.value for s in JobState])
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
