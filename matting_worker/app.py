"""The matting worker's ASGI app: the shared worker server with the matting stage."""

from __future__ import annotations

from fastapi import FastAPI

from shared.roles import MATTING
from shared.roles import worker_id as default_worker_id
from shared.settings import Settings, get_settings
from shared.worker import create_worker_app

from .stage import MattingStage

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    port = port if port is not None else MATTING.worker_port(s)
    wid = default_worker_id(MATTING, s, port, worker_id)
    url = MATTING.api_url(s)
    return create_worker_app(MattingStage(s), s, wid, port, balancer_url=url, host=host)
