"""The matting API: the shared balancer configured for matting workers (`roles.MATTING`)."""

from __future__ import annotations

from fastapi import FastAPI

from shared.balancer.app import BalancerConfig
from shared.roles import MATTING, balancer_config, create_api_app
from shared.settings import Settings

__all__ = ["SERVICE", "create_app", "make_config"]

SERVICE = MATTING.api_service


def make_config(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> BalancerConfig:
    return balancer_config(MATTING, settings, port, worker_urls)


def create_app(
    settings: Settings | None = None, port: int | None = None, worker_urls: list[str] | None = None
) -> FastAPI:
    return create_api_app(MATTING, settings, port, worker_urls)
