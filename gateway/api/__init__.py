"""The gateway's routers; `include_routes` mounts them, behind the API key where one is set."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from gateway.api import download, events, jobs, remove, system, tus, web
from gateway.api import uploads as upload
from gateway.api.auth import require_api_key
from gateway.api.docs import errors

__all__ = ["include_routes"]


def include_routes(app: FastAPI) -> None:
    guarded = [Depends(require_api_key)]
    app.include_router(system.open_router)
    app.include_router(web.router)  # the page is open; its file route guards itself
    for module in (upload, jobs, events, tus, download, system, remove):
        app.include_router(module.router, dependencies=guarded, responses=errors(401))
