"""The real stack for the integration suite: every service its own process under Supervisor.

One stack per test module (starting it costs a few seconds), each on its own free ports and
its own DATA_DIR, so nothing depends on test order or on another suite's leftovers.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mattepipe.stack.supervisor import health_urls, start_stack, stop_stack, wait_healthy
from shared.settings import Settings
from shared.states import ACTIVE_TASK_STATES, FINAL_JOB_STATES

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "mattepipe" / "assets" / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    url: str
    data_dir: Path
    conf: Path
    settings: Settings
    proc: subprocess.Popen[bytes]

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
        pid = until(lambda: (p := self.pid(program)) not in (0, old_pid) and p, timeout,
                    f"{program} restarted")
        wait_healthy([url], timeout=timeout)
        return int(pid)


def until(cond: Callable[[], Any], timeout: float = 120.0, what: str = "condition",
          interval: float = 0.1) -> Any:
    """Poll `cond` until it returns something truthy (which is returned); generous deadlines,
    never a timed assertion: the deadline only turns a hang into a clear failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:g}s (last: {value!r})")
        time.sleep(interval)


def stack_settings(data: Path, **overrides: Any) -> Settings:
    """Settings for a stack on free ports with its data in `data`."""
    ports = {name: free_port() for name in ("gateway", "matting_api", "comparison_api")}
    fields: dict[str, Any] = {
        "data_dir": data,
        "gateway_port": ports["gateway"],
        "matting_api_port": ports["matting_api"],
        "comparison_api_port": ports["comparison_api"],
        "matting_api_url": f"http://127.0.0.1:{ports['matting_api']}",
        "comparison_api_url": f"http://127.0.0.1:{ports['comparison_api']}",
        "matting_worker_port": free_port(),
        "comparison_worker_port": free_port(),
        "matting_workers": 2,
        "comparison_workers": 1,
        "models_dir": data / "models",
    }
    fields.update(overrides)
    workers = {"matting": (fields["matting_worker_port"], fields["matting_workers"]),
               "comparison": (fields["comparison_worker_port"], fields["comparison_workers"])}
    for first, n in workers.values():  # the workers count up from their first port
        for port in range(first, first + n):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    return stack_settings(data, **overrides)
    return Settings(**fields)


@contextmanager
def running_stack(data: Path, conf: Path | None = None, **overrides: Any) -> Iterator[Stack]:
    """The whole stack under Supervisor until the block ends (`overrides`: Settings fields)."""
    settings = stack_settings(data, **overrides)
    conf = conf or data / "supervisord.conf"
    proc = start_stack(settings, conf=conf, quiet=True)
    try:
        wait_healthy(health_urls(settings), timeout=240)
        url = f"http://127.0.0.1:{settings.gateway_port}"
        yield Stack(url=url, data_dir=data, conf=conf, settings=settings, proc=proc)
    finally:
        stop_stack(proc)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("data")) as s:
        yield s


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for a test that breaks things."""
    with running_stack(tmp_path / "data") as s:
        yield s


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


def photo_bytes(name: str, side: int = 200) -> bytes:
    """A real sample photo, scaled down so the suite stays quick on two cores."""
    im = Image.open(SAMPLES / name).convert("RGB")
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def studio_shot(w: int = 160, h: int = 120) -> tuple[bytes, bytes]:
    """A disc on a plain backdrop, with its exact alpha as ground truth (PNG, PNG)."""
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(30.0 - np.hypot(xx - w / 2, yy - h / 2), 0.0, 1.0)
    rgb = (alpha[..., None] * np.array([200, 40, 30]) + (1 - alpha[..., None]) * 235).astype(
        np.uint8
    )
    img, gt = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(img, format="PNG")
    Image.fromarray((alpha * 255).astype(np.uint8)).save(gt, format="PNG")
    return img.getvalue(), gt.getvalue()


def png_set(n: int, side: int = 96) -> dict[str, bytes]:
    """`n` small distinct PNGs (a disc on a tinted backdrop), named in a two-level tree."""
    out: dict[str, bytes] = {}
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(n):
        r = side / 4 + (i % 7)
        disc = np.hypot(xx - side / 2, yy - side / 2) < r
        rgb = np.empty((side, side, 3), np.uint8)
        rgb[...] = (20 + 3 * i % 200, 230, 240 - 2 * i % 200)
        rgb[disc] = (200, 40 + i % 150, 30)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        out[f"set/part{i % 3}/img{i:03d}.png"] = buf.getvalue()
    return out


def noise_set(n: int, side: int) -> dict[str, bytes]:
    """`n` PNGs of noise, named in a two-level tree. They do not compress, so every image
    costs the workers real decode and encode time (a job stays in flight long enough to be
    caught there) and every cut-out is as big as its input."""
    rng = np.random.default_rng(0)
    out: dict[str, bytes] = {}
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buf, "PNG")
        out[f"noise/part{i % 3}/img{i:03d}.png"] = buf.getvalue()
    return out


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
