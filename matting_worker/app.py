"""The matting worker's ASGI app: the shared worker server with the matting stage."""

from __future__ import annotations

from fastapi import FastAPI

from matting_worker.stage import MattingStage
from shared.roles import MATTING, create_role_worker_app
from shared.settings import Settings, get_settings

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, worker_id: str | None = None, port: int | None = None,
    host: str | None = None,
) -> FastAPI:
    s = settings or get_settings()
    return create_role_worker_app(MATTING, MattingStage(s), s, worker_id, port, host)
