"""The real stack for the integration suite: every service its own process under Supervisor,
on its own free ports and its own DATA_DIR (`running_stack`), and what a test asks of it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mattepipe.stack import (
    Program,
    health_urls,
    stack_programs,
    start_stack,
    stop_stack,
    wait_healthy,
    with_internal_token,
)
from shared.settings import Settings
from shared.states import ACTIVE_TASK_STATES, FINAL_JOB_STATES
from tests.support.servers import free_ports
from tests.support.waiting import wait_for


@dataclass
class Stack:
    url: str
    data_dir: Path
    conf: Path
    settings: Settings
    proc: subprocess.Popen[bytes]
    gateways: tuple[str, ...] = ()
    """Every gateway's URL: `url` first, then the extra ones (`running_stack(gateways=n)`)."""

    def gateway(self, n: int) -> httpx.Client:
        """A client of the `n`-th gateway (1 is `url`, the supervised `gateway` program)."""
        return httpx.Client(base_url=self.gateways[n - 1], timeout=60)

    @property
    def internal_headers(self) -> dict[str, str]:
        """The bearer header balancers and workers of this stack want (its INTERNAL_TOKEN)."""
        return {"Authorization": f"Bearer {self.settings.internal_token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def ctl(self, *args: str) -> str:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout

    def wait_final(self, job_id: str, timeout: float = 240.0) -> dict[str, object]:
        """Poll /status until the job ends (riding out a gateway that is restarting)."""
        deadline = time.time() + timeout
        st: object = None
        with self.client() as c:
            while time.time() < deadline:
                try:
                    st = c.get(f"/status/{job_id}").json()
                except httpx.TransportError as exc:
                    st = repr(exc)
                else:
                    assert isinstance(st, dict)
                    if st["state"] in FINAL_JOB_STATES:
                        return dict(st)
                time.sleep(0.5)
        raise AssertionError(f"job {job_id} not finished in {timeout}s: {st}")

    def pid(self, program: str) -> int:
        """The live pid of a supervised program (0 while it is not running)."""
        out = self.ctl("pid", program).strip()
        return int(out) if out.isdigit() else 0

    def kill(self, program: str) -> int:
        """SIGKILL one program, as a crash would; returns the pid that was killed."""
        pid = self.pid(program)
        assert pid, f"{program} is not running: {self.ctl('status', program)}"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, program: str, old_pid: int, url: str, timeout: float = 120.0) -> int:
        """Supervisor brought `program` back under a new pid and `url` (its /health) is 200."""
        pid = wait_for(lambda: (p := self.pid(program)) not in (0, old_pid) and p, timeout,
                    f"{program} restarted")
        wait_healthy([url], timeout=timeout)
        return int(pid)


def stack_settings(data: Path, **overrides: Any) -> Settings:
    """Settings for a stack on free ports with its data in `data`: the three servers' and
    both runs of workers' (they count up from their first port), none shared."""
    n_matting = int(overrides.get("matting_workers", 2))
    n_comparison = int(overrides.get("comparison_workers", 1))
    gateway, matting_api, comparison_api, matting_worker, comparison_worker = free_ports(
        1, 1, 1, n_matting, n_comparison)
    fields: dict[str, Any] = {
        "data_dir": data,
        "gateway_port": gateway,
        "matting_api_port": matting_api,
        "comparison_api_port": comparison_api,
        "matting_api_url": f"http://127.0.0.1:{matting_api}",
        "comparison_api_url": f"http://127.0.0.1:{comparison_api}",
        "matting_worker_port": matting_worker,
        "comparison_worker_port": comparison_worker,
        "matting_workers": n_matting,
        "comparison_workers": n_comparison,
        "models_dir": data / "models",
        # the suites' filler images are identical (`zip_of_images`): with the content-hash
        # cache on they would test the cache, not what they are about; its tests turn it on
        "result_cache": False,
    }
    fields.update(overrides)
    return Settings(**fields)


def gateway_programs(settings: Settings, gateways: int) -> list[Program]:
    """The stack's programs with `gateways` gateways on one database: `gateway` (GATEWAY_ID
    `gateway-1`) and `gateway-2`… on free ports. With more than one, Supervisor restarts none
    of them, so a test can kill one for good and watch the others take over."""
    programs = stack_programs(settings)
    if gateways <= 1:
        return programs
    out: list[Program] = []
    for p in programs:
        if p.name != "gateway":
            out.append(p)
            continue
        out.append(Program(p.name, p.argv, {**p.env, "GATEWAY_ID": "gateway-1"}, p.port,
                           p.priority, autorestart=False))
        # more gateways: ports none of the stack's programs has (they are not bound yet)
        taken = {q.port for q in programs}
        extra: list[int] = []
        while len(extra) < gateways - 1:
            extra = [q for q in free_ports(*(1 for _ in range(gateways - 1))) if q not in taken]
        for n, port in enumerate(extra, start=2):
            out.append(Program(f"gateway-{n}", (*p.argv, "--port", str(port)),
                               {**p.env, "GATEWAY_ID": f"gateway-{n}"}, port, p.priority,
                               autorestart=False))
    return out


@contextmanager
def running_stack(data: Path, conf: Path | None = None, gateways: int = 1,
                  **overrides: Any) -> Iterator[Stack]:
    """The whole stack under Supervisor until the block ends (`overrides`: Settings fields;
    `gateways` > 1 needs a shared database: a Postgres DATABASE_URL)."""
    settings = with_internal_token(stack_settings(data, **overrides))
    conf = conf or data / "supervisord.conf"
    programs = gateway_programs(settings, gateways)
    proc = start_stack(settings, programs, conf=conf, quiet=True)
    try:
        wait_healthy(health_urls(settings, programs), timeout=240)
        urls = tuple(f"http://127.0.0.1:{p.port}" for p in programs
                     if p.name.startswith("gateway"))
        yield Stack(url=urls[0], data_dir=data, conf=conf, settings=settings, proc=proc,
                    gateways=urls)
    finally:
        stop_stack(proc)


@dataclass
class DbCheck:
    integrity: str
    stuck: list[tuple[int, str, float]]
    """(task id, state, lease_expires_at) of dispatched tasks whose lease has run out."""


def db_check(data_dir: Path, now: float | None = None) -> DbCheck:
    """Open the task database read-only: `PRAGMA integrity_check` and the tasks still in a
    dispatched state past their lease (none may be, once the gateway had a moment)."""
    path = data_dir / "mattepipe.db"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        integrity = "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))
        states = sorted(s.value for s in ACTIVE_TASK_STATES)
        marks = ",".join("?" * len(states))
        stuck = con.execute(
            f"SELECT id, state, lease_expires_at FROM tasks WHERE state IN ({marks}) "
            "AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
            (*states, time.time() if now is None else now),
        ).fetchall()
    finally:
        con.close()
    return DbCheck(integrity, [(int(i), str(s), float(t or 0)) for i, s, t in stuck])
