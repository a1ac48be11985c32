"""`POST /models/reload` for the admin: the matting balancer asks every worker to load its
engines again from their files (`shared.balancer.app`), and the answer is told without the
workers' addresses (docs/guarantees.md: internal URLs are not the client's business)."""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import StageFailure
from shared.internal_auth import auth_headers
from shared.responses import ModelReloadReport, WorkerReload
from shared.settings import Settings
from shared.stages import Stage
from shared.timing import STAGE_CONNECT_TIMEOUT_S, STAGE_REQUEST_TIMEOUT_S

__all__ = ["reload_models"]


def _worker(answer: dict[str, Any]) -> WorkerReload:
    body = answer.get("answer") if isinstance(answer.get("answer"), dict) else {}
    assert isinstance(body, dict)
    ok = answer.get("status") == 200 and not body.get("failed")
    return WorkerReload(
        worker_id=str(answer.get("worker_id") or body.get("worker_id") or ""), ok=ok,
        reloaded=list(body.get("reloaded") or []), failed=dict(body.get("failed") or {}),
        not_loaded=list(body.get("not_loaded") or []),
        error="" if answer.get("status") == 200 else
        f"HTTP {answer.get('status')}" if answer.get("status") else "did not answer",
    )


async def reload_models(settings: Settings, names: list[str] | None) -> ModelReloadReport:
    """Every matting worker's outcome; StageFailure (502) when the balancer cannot be asked."""
    url = Stage.MATTING.api_url(settings).rstrip("/") + "/models/reload"
    timeout = httpx.Timeout(STAGE_REQUEST_TIMEOUT_S, connect=STAGE_CONNECT_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            r = await client.post(url, json={"models": names},
                                  headers=auth_headers(settings.internal_token))
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise StageFailure(f"the matting API did not answer: {type(exc).__name__}",
                           status=502, retryable=True) from exc
    if r.status_code != 200 or not isinstance(body, dict):
        raise StageFailure(f"the matting API answered HTTP {r.status_code}", status=502,
                           retryable=True)
    return ModelReloadReport(workers=[_worker(w) for w in body.get("workers", [])
                                      if isinstance(w, dict)])
