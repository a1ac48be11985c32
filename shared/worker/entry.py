"""A stage's worker (`python -m <stage>_worker`): the one worker server around the stage's
`WorkerStage`, on the stage's port, reporting to the stage's balancer.

Each worker package hands in its own stage factory: `worker_main` calls it only after
`configure_threads`, so the engines' numpy/cv2/torch imports see the thread settings."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from shared.internal_auth import MissingInternalToken, require_token
from shared.priority import lower_priority
from shared.settings import Settings, get_settings
from shared.stages import Stage
from shared.worker.stage import WorkerStage

__all__ = ["StageFactory", "create_stage_worker_app", "worker_id", "worker_main"]

StageFactory = Callable[[Settings], WorkerStage[Any, Any, Any]]
"""Builds a worker stage from the settings (imports its engines when called)."""


def worker_id(stage: Stage, s: Settings, port: int, given: str | None = None) -> str:
    return given or s.worker_id or f"{stage.value}-{port}"


def create_stage_worker_app(
    stage: Stage, worker_stage: WorkerStage[Any, Any, Any], s: Settings,
    given_id: str | None = None, port: int | None = None, host: str | None = None,
) -> FastAPI:
    """The worker server for `stage`: its port, its id and the balancer it reports to."""
    from shared.worker.server import create_worker_app

    port = port if port is not None else stage.worker_port(s)
    wid = worker_id(stage, s, port, given_id)
    return create_worker_app(worker_stage, s, wid, port, balancer_url=stage.api_url(s),
                             host=host)


def worker_main(stage: Stage, factory: StageFactory, argv: list[str] | None = None) -> None:
    """`python -m <stage>_worker [--port N] [--worker-id ID] [--host H]`."""
    from shared.worker.stage import configure_threads

    s = get_settings()
    p = argparse.ArgumentParser(prog=stage.worker_package, description=worker_main.__doc__)
    p.add_argument("--port", type=int, default=stage.worker_port(s))
    p.add_argument("--host", default=s.internal_host, help="default: INTERNAL_HOST")
    p.add_argument("--worker-id", default="")
    args = p.parse_args(argv)
    try:
        require_token(s.internal_token, stage.worker_package)
    except MissingInternalToken as exc:
        p.exit(2, f"error: {exc}\n")
    # Before any thread starts (a niceness is per thread; new ones inherit it).
    lower_priority(s.worker_nice)
    configure_threads(s)  # before the engines import numpy/cv2/torch

    from shared.logs import setup_logging
    from shared.serve import serve

    wid = worker_id(stage, s, args.port, args.worker_id)
    setup_logging(wid, s)
    app = create_stage_worker_app(stage, factory(s), s, wid, args.port, args.host)
    serve(app, args.host, args.port, wid)
