"""The comparison worker's ASGI app: the shared worker server with the comparison stage."""

from __future__ import annotations

from fastapi import FastAPI

from comparison_worker.stage import ComparisonStage
from shared.settings import Settings, get_settings
from shared.stages import Stage
from shared.worker.entry import create_stage_worker_app

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    return create_stage_worker_app(Stage.COMPARISON, ComparisonStage(s), s, worker_id, port, host)
