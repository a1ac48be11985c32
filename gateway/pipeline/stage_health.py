"""What `/info` says of each stage: its balancer's own health answer and the gateway's queue.

The balancers' `/health` is open (no token), and is asked with a short timeout in parallel,
so an unreachable stage costs `/info` at most HEALTH_CHECK_TIMEOUT_S and shows as such. No
address is shown: internal URLs are not the client's business (docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from shared.settings import Settings
from shared.stages import Stage
from shared.timing import HEALTH_CHECK_TIMEOUT_S

__all__ = ["balancer_health"]


async def _one(client: httpx.AsyncClient, stage: Stage, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"stage": stage.value, "service": stage.api_service,
                           "status": "unreachable", "healthy_workers": 0, "workers": 0,
                           "balancer_queued": 0}
    try:
        r = await client.get(stage.api_url(settings).rstrip("/") + "/health",
                             timeout=HEALTH_CHECK_TIMEOUT_S)
        body = r.json()
        if r.status_code != 200 or not isinstance(body, dict):
            return out
        out["status"] = "ok" if body.get("status") == "ok" else "degraded"
        for key, src in (("healthy_workers", "healthy_workers"), ("workers", "workers"),
                         ("balancer_queued", "queued")):
            value = body.get(src)
            out[key] = value if isinstance(value, int) and not isinstance(value, bool) else 0
    except (httpx.HTTPError, ValueError):
        pass
    return out


async def balancer_health(
    client: httpx.AsyncClient | None, stages: list[Stage], settings: Settings,
) -> list[dict[str, Any]]:
    """Each stage's balancer health (`status`: ok, degraded or unreachable), in `stages`
    order; `client` None (the scheduler stopped) uses a short-lived one."""
    if client is not None:
        return list(await asyncio.gather(*(_one(client, s, settings) for s in stages)))
    async with httpx.AsyncClient(trust_env=False) as own:
        return list(await asyncio.gather(*(_one(own, s, settings) for s in stages)))
