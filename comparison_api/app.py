"""The comparison API: the shared balancer configured for comparison workers."""

from __future__ import annotations

from fastapi import FastAPI

from shared.balancer import BalancerConfig, create_balancer_app
from shared.settings import Settings, get_settings
from shared.timing import BALANCER_QUEUE_WAIT_S

__all__ = ["SERVICE", "create_app", "make_config"]

SERVICE = "comparison_api"


def make_config(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> BalancerConfig:
    s = settings or get_settings()
    return BalancerConfig(
        service=SERVICE,
        route="/compare",
        port=port if port is not None else s.comparison_api_port,
        worker_urls=worker_urls if worker_urls is not None else s.worker_url_list,
        queue_limit=s.balancer_queue_limit,
        queue_wait_s=BALANCER_QUEUE_WAIT_S,
    )


def create_app(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> FastAPI:
    return create_balancer_app(make_config(settings, port, worker_urls))
