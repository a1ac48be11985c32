"""rembg's HTTP API and the content-hash cache on the real stack under Supervisor: the gateway
sends `/api/remove` through the real matting balancer's sync lane to the real worker
(`classical`), while a bulk job runs; a job with duplicate images reuses their cut-outs."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from shared.states import FINAL_JOB_STATES
from tests.support.images import make_zip
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

KEY = "remove-tenant-4d2a"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("remove") / "data"
    data.mkdir()
    with running_stack(data, api_key=KEY, default_model="classical", matting_workers=1,
                       comparison_workers=1, result_cache=True) as s:
        yield s


def photo(w: int = 96, h: int = 64, seed: int = 0) -> bytes:
    """A bright disc on a dark, slightly noisy ground: something to cut out."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2
    rgb = np.where(disc[..., None], [230, 200, 60], [20, 30, 40]).astype(np.int16)
    rgb += rng.integers(-6, 6, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def wait_done(stack: Stack, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st: dict[str, Any] = httpx.get(f"{stack.url}/status/{job_id}", headers=AUTH,
                                       timeout=60).json()
        return st if st["state"] in FINAL_JOB_STATES else None

    result: dict[str, Any] = wait_for(done, 300, f"job {job_id} ends")
    return result


def remove(stack: Stack, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/remove", params=params, headers=AUTH, timeout=180,
                      files={"file": ("photo.jpg", body, "image/jpeg")})


def test_the_real_worker_answers_the_cut_out(stack: Stack, tmp_path: Path) -> None:
    r = remove(stack, photo())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    cut = Image.open(io.BytesIO(r.content))
    assert cut.mode == "RGBA" and cut.size == (96, 64)
    alpha = np.asarray(cut)[..., 3]
    assert alpha[32, 48] > 200 and alpha[2, 2] < 50  # the disc kept, the ground gone
    mask = Image.open(io.BytesIO(remove(stack, photo(), om="true").content))
    assert mask.mode == "L" and mask.size == (96, 64)
    flat = Image.open(io.BytesIO(remove(stack, photo(), bgc="255,255,255,255").content))
    assert flat.mode == "RGB" and flat.getpixel((2, 2)) == (255, 255, 255)
    # rembg's README, as it is: curl -F file=@photo.jpg .../api/remove -o out.png
    src, out = tmp_path / "photo.jpg", tmp_path / "out.png"
    src.write_bytes(photo())
    subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {KEY}", "-F",
                    f"file=@{src}", f"{stack.url}/api/remove", "-o", str(out)],
                   check=True, timeout=180)
    assert Image.open(out).mode == "RGBA"
    assert not list(stack.data_dir.glob("input/sync-*"))
    assert not list(stack.data_dir.glob("matting_output/sync-*"))
    assert httpx.post(f"{stack.url}/api/remove", timeout=60,
                      files={"file": ("p.jpg", photo(), "image/jpeg")}).status_code == 401


def test_sync_requests_are_served_while_a_bulk_job_runs(stack: Stack) -> None:
    members = {f"bulk/{i:03d}.jpg": photo(320, 240, seed=100 + i) for i in range(40)}
    r = httpx.post(f"{stack.url}/upload?filename=bulk.zip", content=make_zip(members),
                   headers={**AUTH, "Content-Type": "application/zip"}, timeout=120)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    with ThreadPoolExecutor(3) as ex:
        answers = list(ex.map(lambda i: remove(stack, photo(seed=i)), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    st = wait_done(stack, job_id)
    assert st["state"] == "completed" and st["completed"] == 40


def test_duplicates_in_a_job_are_cached(stack: Stack) -> None:
    a, b = photo(seed=7), photo(seed=8)
    body = make_zip({"a.jpg": a, "b.jpg": b, "again/a.jpg": a, "again/b.jpg": b})
    r = httpx.post(f"{stack.url}/upload?filename=dups.zip", content=body,
                   headers={**AUTH, "Content-Type": "application/zip"}, timeout=120)
    job_id = r.json()["job_id"]
    assert wait_done(stack, job_id)["state"] == "completed"
    z = zipfile.ZipFile(io.BytesIO(httpx.get(f"{stack.url}/download/{job_id}", headers=AUTH,
                                             timeout=120).content))
    items = {i["path"]: i for i in json.loads(z.read("report.json"))["items"]}
    assert sum(i["cached"] for i in items.values()) == 2
    for path in ("a", "b"):
        first = z.read(f"matting_output/{path}.png")
        assert first == z.read(f"matting_output/again/{path}.png")  # the very same cut-out
