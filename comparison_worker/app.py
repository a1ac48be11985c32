"""The comparison worker's ASGI app: the shared worker server with the comparison stage."""

from __future__ import annotations

from fastapi import FastAPI

from shared.roles import COMPARISON
from shared.roles import worker_id as default_worker_id
from shared.settings import Settings, get_settings
from shared.worker import create_worker_app

from .stage import ComparisonStage

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    port = port if port is not None else COMPARISON.worker_port(s)
    wid = default_worker_id(COMPARISON, s, port, worker_id)
    url = COMPARISON.api_url(s)
    return create_worker_app(ComparisonStage(s), s, wid, port, balancer_url=url, host=host)
