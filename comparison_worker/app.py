"""The comparison worker's ASGI app: the shared worker server with the comparison stage."""

from __future__ import annotations

from fastapi import FastAPI

from comparison_worker.stage import ComparisonStage
from shared.roles import COMPARISON, create_role_worker_app
from shared.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    return create_role_worker_app(COMPARISON, ComparisonStage(s), s, worker_id, port, host)
