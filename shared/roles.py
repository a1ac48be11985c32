"""The two stages as data: what makes the matting API differ from the comparison API, and the
matting worker from the comparison worker, is this table — the code is one balancer and one
worker server, started by the same two entry points."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from shared.balancer.app import BalancerConfig, create_balancer_app
from shared.settings import Settings, get_settings
from shared.timing import BALANCER_QUEUE_WAIT_S
from shared.worker.stage import Stage

__all__ = [
    "COMPARISON",
    "MATTING",
    "StageRole",
    "api_main",
    "balancer_config",
    "create_api_app",
    "create_role_worker_app",
    "worker_id",
    "worker_main",
]


@dataclass(frozen=True)
class StageRole:
    name: str
    """'matting' or 'comparison': worker ids default to `<name>-<port>`."""
    route: str
    """The stage endpoint on balancer and worker."""
    api_port_field: str
    worker_port_field: str
    api_url_field: str

    @property
    def api_service(self) -> str:
        return f"{self.name}_api"

    @property
    def worker_package(self) -> str:
        return f"{self.name}_worker"

    def api_port(self, s: Settings) -> int:
        return int(getattr(s, self.api_port_field))

    def worker_port(self, s: Settings) -> int:
        return int(getattr(s, self.worker_port_field))

    def api_url(self, s: Settings) -> str:
        """Where this stage's workers send their heartbeats."""
        return str(getattr(s, self.api_url_field))


MATTING = StageRole("matting", "/matting", "matting_api_port", "matting_worker_port",
                    "matting_api_url")
COMPARISON = StageRole("comparison", "/compare", "comparison_api_port",
                       "comparison_worker_port", "comparison_api_url")


def balancer_config(
    role: StageRole, settings: Settings | None = None, port: int | None = None,
    worker_urls: list[str] | None = None,
) -> BalancerConfig:
    s = settings or get_settings()
    return BalancerConfig(
        service=role.api_service,
        route=role.route,
        port=port if port is not None else role.api_port(s),
        worker_urls=worker_urls if worker_urls is not None else s.worker_url_list,
        queue_limit=s.balancer_queue_limit,
        queue_wait_s=BALANCER_QUEUE_WAIT_S,
    )


def create_api_app(
    role: StageRole, settings: Settings | None = None, port: int | None = None,
    worker_urls: list[str] | None = None,
) -> FastAPI:
    return create_balancer_app(balancer_config(role, settings, port, worker_urls))


def api_main(role: StageRole, argv: list[str] | None = None) -> None:
    """`python -m <stage>_api [--port N] [--host H] [--worker-urls URL,…]`."""
    from shared.logs import setup_logging
    from shared.serve import serve

    s = get_settings()
    p = argparse.ArgumentParser(prog=role.api_service, description=api_main.__doc__)
    p.add_argument("--port", type=int, default=role.api_port(s))
    p.add_argument("--host", default=s.host)
    p.add_argument("--worker-urls", default=None, help="comma-separated; overrides WORKER_URLS")
    args = p.parse_args(argv)
    urls = None
    if args.worker_urls is not None:
        urls = [u.strip().rstrip("/") for u in args.worker_urls.split(",") if u.strip()]
    setup_logging(role.api_service, s)
    serve(create_api_app(role, s, args.port, urls), args.host, args.port, role.api_service)


def worker_id(role: StageRole, s: Settings, port: int, given: str | None = None) -> str:
    return given or s.worker_id or f"{role.name}-{port}"


def create_role_worker_app(
    role: StageRole, stage: Stage[Any, Any], s: Settings, given_id: str | None = None,
    port: int | None = None, host: str | None = None,
) -> FastAPI:
    """The worker server for `role`: its port, its id and the balancer it reports to."""
    from shared.worker.server import create_worker_app

    port = port if port is not None else role.worker_port(s)
    wid = worker_id(role, s, port, given_id)
    return create_worker_app(stage, s, wid, port, balancer_url=role.api_url(s), host=host)


def worker_main(role: StageRole, argv: list[str] | None = None) -> None:
    """`python -m <stage>_worker [--port N] [--worker-id ID] [--host H]`."""
    from shared.worker.stage import configure_threads

    s = get_settings()
    p = argparse.ArgumentParser(prog=role.worker_package, description=worker_main.__doc__)
    p.add_argument("--port", type=int, default=role.worker_port(s))
    p.add_argument("--host", default=s.host)
    p.add_argument("--worker-id", default="")
    args = p.parse_args(argv)
    configure_threads(s)  # before the engines import numpy/cv2/torch

    from shared.logs import setup_logging
    from shared.serve import serve

    app_module = importlib.import_module(f"{role.worker_package}.app")
    wid = worker_id(role, s, args.port, args.worker_id)
    setup_logging(wid, s)
    serve(app_module.create_app(s, wid, args.port, args.host), args.host, args.port, wid)
