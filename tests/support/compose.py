"""The compose stack for real: docker-compose.yml with the CPU override, built images, one
project of its own per fixture (its containers, network and data folder), and what a test asks
of it. Traffic goes only to 127.0.0.1 (the gateway is published there on a free port) and to
the project's own containers (`docker kill`, `docker inspect`).

`running_compose_stack` removes everything the project made when it ends, failed or not:
`down -v`, then any container, network or volume still labelled with the project's name, and
hands the data folder back to the test's user (the services write it as uid 10001).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.states import FINAL_JOB_STATES
from tests.support.servers import free_port
from tests.support.waiting import wait_for

__all__ = ["ComposeStack", "compose_unavailable", "project_leftovers", "running_compose_stack"]

ROOT = Path(__file__).resolve().parents[2]
FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
IMAGES = ("mattepipe-light:latest", "mattepipe-engines:cpu")
LABEL = "com.docker.compose.project"
UP_TIMEOUT_S = 600  # the first start of a worker imports torch on a busy machine


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode:
        raise AssertionError(f"docker {' '.join(args)}: {out.returncode}\n{out.stderr}")
    return out.stdout


def compose_unavailable() -> str:
    """Why the compose suite cannot run here ("" when it can): `make test` installs and starts
    the engine and builds the images first (`make images-cpu`)."""
    if shutil.which("docker") is None:
        return "no docker client (make engine installs one)"
    for args, why in ((["info"], "no Docker engine answers (make engine starts one)"),
                      (["compose", "version"], "no `docker compose` plugin (make engine)")):
        if subprocess.run(["docker", *args], capture_output=True, timeout=60).returncode:
            return why
    missing = [i for i in IMAGES if subprocess.run(
        ["docker", "image", "inspect", i], capture_output=True, timeout=60).returncode]
    return f"images {missing} not built (make images-cpu)" if missing else ""


@dataclass
class ComposeStack:
    project: str
    url: str
    data_dir: Path
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        files = [a for f in FILES for a in ("-f", str(ROOT / f))]
        out = subprocess.run(["docker", "compose", "-p", self.project, *files, *args],
                             cwd=ROOT, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode:
            raise AssertionError(f"compose {' '.join(args)}: {out.returncode}\n{out.stderr}")
        return out.stdout

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", "--all", service).split()
        assert len(ids) == 1, (service, ids)
        return ids[0]

    def state(self, service: str) -> dict[str, Any]:
        """`docker inspect`'s State of the service's container, with its RestartCount."""
        info = json.loads(_docker("inspect", self.container(service)))[0]
        return {**info["State"], "RestartCount": info["RestartCount"]}

    def kill(self, service: str) -> int:
        """SIGKILL the container's main process by its host pid, as a crash would; returns
        its restart count before. Not `docker kill -s KILL`: Docker 20.10 records that as a
        manual stop and its restart policy then leaves the container down (tried)."""
        before = self.state(service)
        assert before["Running"] and before["Pid"], (service, before)
        if os.geteuid() != 0:
            pytest.skip("crashing a container's process from outside needs root")
        os.kill(int(before["Pid"]), signal.SIGKILL)
        return int(before["RestartCount"])

    def wait_restarted(self, service: str, restarts: int, timeout: float = 300) -> None:
        """Docker restarted the container and its health check passes again."""
        def back() -> bool:
            st = self.state(service)
            health = st.get("Health", {}).get("Status", "healthy")
            return bool(st["RestartCount"] > restarts and st["Running"] and health == "healthy")
        wait_for(back, timeout, f"{service} restarted and healthy", interval=0.5)

    def wait_final(self, job_id: str, timeout: float = 600.0) -> dict[str, object]:
        """Poll /status until the job ends (riding out a gateway that is restarting)."""
        def final() -> dict[str, object] | None:
            try:
                with self.client() as c:
                    st = c.get(f"/status/{job_id}").json()
            except (httpx.TransportError, ValueError):
                return None
            return dict(st) if st.get("state") in FINAL_JOB_STATES else None
        result: dict[str, object] = wait_for(final, timeout, f"job {job_id} finished", 0.5)
        return result

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", timeout=60, check=False)


def _remove_leftovers(project: str) -> None:
    """Whatever `down -v` left with the project's label (it failed, or was never reached)."""
    flt = f"label={LABEL}={project}"
    for kind, rm in (("container", ["rm", "-f", "-v"]), ("network", ["network", "rm"]),
                     ("volume", ["volume", "rm", "-f"])):
        ids = _docker(kind, "ls", "-q", "--all", "--filter", flt, check=False).split() \
            if kind == "container" else \
            _docker(kind, "ls", "-q", "--filter", flt, check=False).split()
        if ids:
            _docker(*rm, *ids, check=False)


def project_leftovers(project: str) -> list[str]:
    """Containers, networks and volumes still labelled with the project (none, after it)."""
    flt = f"label={LABEL}={project}"
    return (_docker("container", "ls", "-q", "--all", "--filter", flt).split()
            + _docker("network", "ls", "-q", "--filter", flt).split()
            + _docker("volume", "ls", "-q", "--filter", flt).split())


@contextmanager
def running_compose_stack(data: Path, **env: str) -> Iterator[ComposeStack]:
    """`up --wait` on a fresh project: the gateway on 127.0.0.1 at a free port, the data
    folder at `data` (DATA_HOST_PATH); everything removed at the end, also on failure."""
    why = compose_unavailable()
    if why:
        pytest.skip(why)
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    project = f"mattepipe-test-{uuid.uuid4().hex[:10]}"
    stack = ComposeStack(project, f"http://127.0.0.1:{port}", data, {
        **os.environ,
        "INTERNAL_TOKEN": secrets.token_hex(32),
        "DATA_HOST_PATH": str(data),
        "GATEWAY_PUBLISH": f"127.0.0.1:{port}",
        "API_KEY": "",
        "WORKER_THREADS": "1",
        **env,
    })
    started = time.monotonic()
    try:
        try:
            stack.compose("up", "--detach", "--no-build", "--pull", "never", "--wait",
                          "--wait-timeout", str(UP_TIMEOUT_S), timeout=UP_TIMEOUT_S + 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        print(f"\ncompose stack {project} healthy in {time.monotonic() - started:.0f}s")
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10",
                      timeout=300, check=False)
        left = project_leftovers(project)
        _remove_leftovers(project)
        # the services wrote the folder as uid 10001: hand it back to whoever runs the tests
        if data.exists() and os.getuid() != 0:
            _docker("run", "--rm", "--user", "0", "--network", "none", "-v", f"{data}:/d",
                    IMAGES[0], "chown", "-R", f"{os.getuid()}:{os.getgid()}", "/d", check=False)
        assert not left, f"`down --volumes` left these of {project}: {left}"
