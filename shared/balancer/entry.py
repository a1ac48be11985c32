"""A stage's balancer (`python -m <stage>_api`): the one balancer app, set up from `Stage`."""

from __future__ import annotations

import argparse

from fastapi import FastAPI

from shared.balancer.app import BalancerConfig, create_balancer_app
from shared.internal_auth import MissingInternalToken, require_token
from shared.settings import Settings, get_settings
from shared.stages import Stage
from shared.timing import BALANCER_QUEUE_WAIT_S

__all__ = ["api_main", "balancer_config", "create_api_app"]


def balancer_config(
    stage: Stage, settings: Settings | None = None, port: int | None = None,
    worker_urls: list[str] | None = None,
) -> BalancerConfig:
    s = settings or get_settings()
    return BalancerConfig(
        service=stage.api_service,
        route=stage.route,
        port=port if port is not None else stage.api_port(s),
        worker_urls=worker_urls if worker_urls is not None else s.worker_url_list,
        queue_limit=s.balancer_queue_limit,
        queue_wait_s=BALANCER_QUEUE_WAIT_S,
        token=s.internal_token or "",
        resource_interval_s=s.resource_log_interval_s,
        sync_limit=s.sync_queue_limit,
        sync_wait_s=s.sync_queue_wait_s,
    )


def create_api_app(
    stage: Stage, settings: Settings | None = None, port: int | None = None,
    worker_urls: list[str] | None = None,
) -> FastAPI:
    return create_balancer_app(balancer_config(stage, settings, port, worker_urls))


def api_main(stage: Stage, argv: list[str] | None = None) -> None:
    """`python -m <stage>_api [--port N] [--host H] [--worker-urls URL,…]`."""
    from shared.logs import setup_logging
    from shared.serve import serve

    s = get_settings()
    p = argparse.ArgumentParser(prog=stage.api_service, description=api_main.__doc__)
    p.add_argument("--port", type=int, default=stage.api_port(s))
    p.add_argument("--host", default=s.internal_host, help="default: INTERNAL_HOST")
    p.add_argument("--worker-urls", default=None, help="comma-separated; overrides WORKER_URLS")
    args = p.parse_args(argv)
    try:
        require_token(s.internal_token, stage.api_service)
    except MissingInternalToken as exc:
        p.exit(2, f"error: {exc}\n")
    urls = None
    if args.worker_urls is not None:
        urls = [u.strip().rstrip("/") for u in args.worker_urls.split(",") if u.strip()]
    setup_logging(stage.api_service, s)
    serve(create_api_app(stage, s, args.port, urls), args.host, args.port, stage.api_service)
