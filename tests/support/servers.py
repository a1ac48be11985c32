"""Test helpers: real uvicorn servers on free ports, in a thread or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
INTERNAL_TOKEN = "test-internal-token"
"""The internal plane's token of servers the tests start (balancers and workers need one)."""
INTERNAL_HEADERS = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
"""What a test sends to a balancer's or worker's routes other than /health."""


def free_port() -> int:
    """A port free right now (a server started later may lose it: `ThreadServer` binds its own
    socket first instead). Several ports for one test: `free_ports`, in one call."""
    return free_ports(1)[0]


def free_ports(*runs: int) -> list[int]:
    """The first ports of runs of consecutive ports (`runs`: the length of each), every port
    free right now and no two runs sharing one: each socket is held until all are found
    (separate `free_port` calls can hand out the same port twice; a stack once got one port
    for two workers, and the comparison API sent its batches to the matting worker)."""
    held: list[socket.socket] = []
    firsts: list[int] = []
    try:
        for length in runs:
            while True:
                run = [socket.socket()]
                run[0].bind(("127.0.0.1", 0))
                first: int = run[0].getsockname()[1]
                try:
                    for offset in range(1, length):
                        run.append(socket.socket())
                        run[-1].bind(("127.0.0.1", first + offset))
                except (OSError, OverflowError):
                    for sock in run:
                        sock.close()
                    continue
                held += run
                firsts.append(first)
                break
        return firsts
    finally:
        for sock in held:
            sock.close()


class ThreadServer:
    """uvicorn in a daemon thread (no signal handlers), lifespan included, on a socket bound
    before it starts (to `port`, or to a free one). `http`: uvicorn's protocol (the services'
    own, `shared.serve.HttpProtocol`, for tests of what it adds)."""

    def __init__(self, app: Any, port: int | None = None, http: Any = "auto") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="on", http=http)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive():
                raise AssertionError("server thread ended before it started")
            return self.server.started

        wait_for(started, 30, "server start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


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
                    "INTERNAL_HOST": "127.0.0.1", "INTERNAL_TOKEN": INTERNAL_TOKEN,
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

        wait_for(up, timeout, f"{self.module} on {self.port}")
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


class CuttingProxy:
    """A TCP proxy on loopback in front of `upstream` (host, port) that cuts the connection
    (both sides) once it has passed `after` bytes of the answer, for each of the first
    `cuts` connections; later ones pass whole. `cut` counts the connections it cut."""

    def __init__(self, upstream: tuple[str, int], after: int, cuts: int) -> None:
        self.upstream, self.after, self.cuts, self.cut = upstream, after, cuts, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                cutting = self.cut < self.cuts
                self.cut += cutting
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, server, None),
                             daemon=True).start()
            threading.Thread(target=self._pump,
                             args=(server, client, self.after if cutting else None),
                             daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                if limit is not None and passed + len(data) >= limit:
                    dst.sendall(data[: limit - passed])
                    break
                dst.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_sendfile(monkeypatch: Any) -> list[int]:
    """The bytes of every `os.sendfile` call from now on (each still the real call), for a
    test to see that a body went by the kernel; `monkeypatch` is pytest's."""
    calls: list[int] = []
    real = os.sendfile

    def counted(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        n = real(out_fd, in_fd, offset, count)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counted)
    return calls
