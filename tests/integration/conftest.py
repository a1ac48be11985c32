"""The real stack for the integration suite: every service its own process under Supervisor.

One stack per test module (starting it costs a few seconds), each on its own free ports and
its own DATA_DIR, so nothing depends on test order or on another suite's leftovers.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from shared.settings import Settings
from shared.stack import health_urls, start_stack, stop_stack, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "shared" / "assets" / "samples"


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
        deadline = time.time() + timeout
        with self.client() as c:
            while time.time() < deadline:
                st = c.get(f"/status/{job_id}").json()
                if st["state"] in ("completed", "completed_with_errors", "failed", "cancelled"):
                    return dict(st)
                time.sleep(0.5)
        raise AssertionError(f"job {job_id} not finished in {timeout}s: {st}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("data")
    mw, cw = free_port(), free_port()
    ports = {name: free_port() for name in ("gateway", "matting_api", "comparison_api")}
    settings = Settings(
        data_dir=data,
        gateway_port=ports["gateway"],
        matting_api_port=ports["matting_api"],
        comparison_api_port=ports["comparison_api"],
        matting_api_url=f"http://127.0.0.1:{ports['matting_api']}",
        comparison_api_url=f"http://127.0.0.1:{ports['comparison_api']}",
        matting_worker_port=mw,
        comparison_worker_port=cw,
        matting_workers=2,
        comparison_workers=1,
        models_dir=data / "models",
    )
    conf = data / "supervisord.conf"
    proc = start_stack(settings, conf=conf, quiet=True)
    try:
        wait_healthy(health_urls(settings), timeout=240)
        url = f"http://127.0.0.1:{settings.gateway_port}"
        yield Stack(url=url, data_dir=data, conf=conf, settings=settings, proc=proc)
    finally:
        stop_stack(proc)


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


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
