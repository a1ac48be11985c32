"""`/health` (open, for probes), `/info` (what a client needs to know, and the stages' state)
and `/metrics` (Prometheus text)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import GW, ReadDB
from gateway.db import repo, transitions
from gateway.pipeline.stage_health import balancer_health
from shared.formats import IMAGE_SUFFIXES, OUTPUT_MODES
from shared.responses import GatewayInfo, GatewayLimits, Health, StageHealth
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


ARCHIVE_FORMATS = ("zip", "tar", "tar.gz", "tar.bz2", "tar.xz")
"""What `gateway.intake.archive.detect_kind` unpacks (compressed tars by their magic)."""


@router.get("/info", response_model=GatewayInfo)
async def info(request: Request, db: ReadDB, gw: GW) -> GatewayInfo:
    """Version, uptime, the limits and formats a client needs, each stage's balancer health
    and the task queues. Behind the key: the queues are every tenant's load."""
    s = gw.settings
    tasks, _ = await repo.global_counts(db)
    stages = list(transitions.STAGES)
    health = await balancer_health(gw.scheduler.client, stages, s)
    rows = [StageHealth(**h, queued_tasks=tasks.get(stage.queued_state, 0),
                        in_flight=len(gw.scheduler.inflight.get(stage, ())))
            for stage, h in zip(stages, health, strict=True)]
    limits = GatewayLimits(**{k: getattr(s, k) for k in GatewayLimits.model_fields})
    return GatewayInfo(
        version=request.app.version, started_at=gw.started_at,
        uptime_s=round(time.time() - gw.started_at, 3), default_model=s.default_model,
        image_formats=sorted(IMAGE_SUFFIXES), archive_formats=list(ARCHIVE_FORMATS),
        output_modes=list(OUTPUT_MODES), limits=limits, stages=rows, tasks=tasks,
    )


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
