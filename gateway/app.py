"""The gateway app: `create_app(settings)` for tests and embedding, `app` for uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from gateway.api import include_routes
from gateway.api.cors import add_cors
from gateway.api.errors import add_error_handlers
from gateway.api.mcp import mount_mcp
from gateway.state import GatewayState
from shared.settings import Settings, get_settings

__all__ = ["app", "create_app"]

log = logging.getLogger("gateway")


def create_app(settings: Settings | None = None, **scheduler_opts: Any) -> FastAPI:
    """A gateway on `settings` (default: the environment). `scheduler_opts` go to
    `Scheduler` (lease, backoff, idle times), for tests that cannot wait minutes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = await GatewayState.open(settings or get_settings(), **scheduler_opts)
        app.state.gw = gw
        await gw.start()
        log.info("gateway ready: data in %s, stages at %s and %s", gw.storage.root,
                 gw.settings.matting_api_url, gw.settings.comparison_api_url)
        try:
            async with mcp_running():  # the MCP endpoint's sessions (gateway.api.mcp)
                yield
        finally:
            await gw.close()

    app = FastAPI(
        title="mattepipe gateway",
        summary="Bulk background removal: upload an archive, follow its progress, "
        "download the cut-outs, comparison sheets and report as one zip.",
        version="0.1.0",
        lifespan=lifespan,
    )
    include_routes(app)
    add_error_handlers(app)  # gateway.errors and a full database → {"detail": ...} answers
    add_cors(app, settings or get_settings())  # CORS_ORIGINS; none by default
    mcp_running = mount_mcp(app)  # /mcp: tools for agents, behind the same keys

    return app


app = create_app()
