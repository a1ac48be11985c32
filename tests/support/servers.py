"""Test helpers: real uvicorn servers on free ports, in a thread or as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


class ThreadServer:
    """uvicorn in a background thread (no signal handlers), lifespan included."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 30, "server start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class ProcessServer:
    """`python -m <module> --port P …` with its own env; stopped (or killed) at exit."""

    def __init__(self, module: str, env: dict[str, str], args: list[str] | None = None,
                 port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.module = module
        self.args = ["--port", str(self.port), *(args or [])]
        # The checkout first, then the caller's path (where a GPU machine keeps carried wheels).
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.env = {**os.environ, "PYTHONPATH": path, "HOST": "127.0.0.1",
                    "WORKER_THREADS": "1", **env}
        self.log_path = (log_dir or Path(env.get("DATA_DIR", "."))) / f"{module}-{self.port}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, health: str = "/health", ready: Callable[[httpx.Response], bool] | None = None,
              timeout: float = 60.0) -> ProcessServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args], cwd=ROOT,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        check = ready or (lambda r: r.status_code == 200)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.module} exited: {self.log_path.read_text()[-3000:]}")
            return check(httpx.get(self.url + health, timeout=2))

        wait_until(up, timeout, f"{self.module} on {self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
