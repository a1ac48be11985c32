"""The comparison worker's ASGI app: the shared worker server with the comparison stage."""

from __future__ import annotations

from fastapi import FastAPI

from shared.settings import Settings, get_settings
from shared.worker import create_worker_app

from .stage import ComparisonStage

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    port = port if port is not None else s.comparison_worker_port
    wid = worker_id or s.worker_id or f"comparison-{port}"
    return create_worker_app(ComparisonStage(s), s, wid, port,
                             balancer_url=s.comparison_api_url, host=host)
