"""The local stack: every service its own process under Supervisor, restarted on a crash.

`run_stack` is `make run`; `start_stack`/`stop_stack` run it in the background (the demo,
tests). The config itself is built in `stack_config`, re-exported here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import FrameType

import httpx

from mattepipe.stack.config import (
    STOP_WAIT_S,
    Program,
    StackError,
    health_urls,
    internal_url,
    local_url,
    stack_environment,
    stack_programs,
    supervisor_bin,
    with_internal_token,
    write_config,
)
from shared.settings import Settings

__all__ = [
    "READY_TIMEOUT_S",
    "run_stack",
    "start_stack",
    "stop_stack",
    "wait_healthy",
]

READY_TIMEOUT_S = 180.0
"""Engines load (and numba compiles) before /health answers 200."""


def _check_ports_free(settings: Settings, programs: Sequence[Program]) -> None:
    for p in programs:
        if p.port is None:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((settings.internal_host if p.internal else settings.host, p.port))
            except OSError as exc:
                raise StackError(f"port {p.port} ({p.name}) is taken: {exc.strerror}; is a "
                                 "stack already running? Choose other ports in .env") from None


def start_stack(settings: Settings, programs: Sequence[Program] | None = None,
                conf: Path | None = None, quiet: bool = False) -> subprocess.Popen[bytes]:
    """supervisord in the background, in its own session (a terminal's Ctrl-C reaches only
    us, and we stop it in order: otherwise it might restart children the signal killed).
    `quiet` keeps its messages to its log file (DATA_DIR/logs/supervisord.log).
    The internal token reaches the services only through supervisord's environment."""
    settings = with_internal_token(settings)
    progs = stack_programs(settings) if programs is None else list(programs)
    _check_ports_free(settings, progs)
    path = write_config(settings, conf or settings.data_dir.resolve() / "supervisord.conf", progs)
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen([supervisor_bin(), "-n", "-c", str(path)], stdout=out, stderr=out,
                            env=stack_environment(settings), start_new_session=True)


def stop_stack(proc: subprocess.Popen[bytes], timeout: float = STOP_WAIT_S + 15.0) -> int:
    """SIGTERM to supervisord: it stops every program (TERM, then KILL) and exits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def wait_healthy(urls: Sequence[str], timeout: float = READY_TIMEOUT_S,
                 alive: Callable[[], bool] | None = None, interval: float = 0.5) -> None:
    """Block until every URL answers 200; TimeoutError names those that never did."""
    pending = list(urls)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while pending:
            if alive is not None and not alive():
                raise StackError("the stack stopped while waiting for it to become ready")
            still = []
            for url in pending:
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    still.append(url)
            pending = still
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(interval)


def run_stack(settings: Settings, ready_timeout: float = READY_TIMEOUT_S,
              echo: Callable[[str], None] = partial(print, flush=True),
              programs: Sequence[Program] | None = None) -> int:
    """Run the stack in the foreground until Ctrl-C or SIGTERM; returns supervisord's status."""
    try:
        settings = with_internal_token(settings)
    except StackError as exc:
        echo(f"error: {exc}")
        return 2
    progs = stack_programs(settings) if programs is None else list(programs)
    try:
        proc = start_stack(settings, progs)
    except StackError as exc:
        echo(f"error: {exc}")
        return 2
    logs = settings.data_dir.resolve() / "logs"

    def _stop(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        echo(f"starting mattepipe (logs in {logs}) …")
        try:
            wait_healthy(health_urls(settings, progs), ready_timeout,
                         alive=lambda: proc.poll() is None)
        except TimeoutError as exc:
            echo(f"warning: {exc}; still trying — see {logs}")
        except StackError:
            pass
        else:
            gw = local_url(settings, settings.gateway_port)
            echo(f"mattepipe is up — web page {gw}/ · API docs {gw}/docs · "
                 f"status {gw}/status/<job_id>\n  matting API "
                 f"{internal_url(settings, settings.matting_api_port)} · comparison API "
                 f"{internal_url(settings, settings.comparison_api_port)} (internal: "
                 f"token in {logs.parent}/internal_token unless INTERNAL_TOKEN is set) · "
                 "Ctrl-C stops it")
        return proc.wait()
    finally:
        stop_stack(proc)
        for s, handler in old.items():
            signal.signal(s, handler)
