"""The comparison API: the shared balancer set up for comparison workers (`Stage.COMPARISON`)."""

from __future__ import annotations

from fastapi import FastAPI

from shared.balancer.app import BalancerConfig
from shared.balancer.entry import balancer_config, create_api_app
from shared.settings import Settings
from shared.stages import Stage

__all__ = ["SERVICE", "create_app", "make_config"]

SERVICE = Stage.COMPARISON.api_service


def make_config(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> BalancerConfig:
    return balancer_config(Stage.COMPARISON, settings, port, worker_urls)


def create_app(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> FastAPI:
    return create_api_app(Stage.COMPARISON, settings, port, worker_urls)
