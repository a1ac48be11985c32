"""Both worker stages on S3 (STORAGE_URL=s3://…, a real SeaweedFS): inputs are read and
cut-outs, sheets and metrics written as objects, with no shared volume — each worker has a
DATA_DIR of its own that stays empty — and the path rules of `Storage.job_key` hold for keys:
no `..`, no other job's keys, no other stage's area, no wrong suffix."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from comparison_worker.app import create_app as comparison_app
from matting_worker.app import create_app as matting_app
from shared.objects import ObjectStore, open_store
from shared.settings import Settings
from tests.support.seaweed import S3Server
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ThreadServer
from tests.support.waiting import wait_for

PRECIOUS = b"precious"


def _png(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def s3(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory,
       ) -> Iterator[tuple[Settings, Settings, ObjectStore]]:
    """Settings of a matting and a comparison worker on one fresh prefix, each with an empty
    DATA_DIR of its own; the store, with a job's input and a decoy of another job in it."""
    url = s3_server.storage_url(f"w-{uuid.uuid4().hex[:10]}")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in s3_server.env.items():
            mp.setenv(name, value)
        common: dict[str, Any] = {"storage_url": url, "s3_endpoint_url": s3_server.endpoint,
                                  "internal_token": INTERNAL_TOKEN, "worker_threads": 1,
                                  "matting_api_url": "", "comparison_api_url": ""}
        mat = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("mw"),  # type: ignore[call-arg]
                       default_model="identity", **common)
        cmp_ = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("cw"),  # type: ignore[call-arg]
                        **common)
        store = open_store(mat)
        rng = np.random.default_rng(3)
        store.put("input/j/sub/p.png", _png(rng.integers(0, 255, (40, 60, 3), np.uint8), "RGB"))
        gt = np.zeros((40, 60), np.uint8)
        gt[10:30, 15:45] = 255
        store.put("input/j/gt.png", _png(gt, "L"))
        for decoy in ("input/other/p.png", "matting_output/other/p.png",
                      "final_results/other/p_compare.jpg", "mattepipe.db"):
            store.put(decoy, PRECIOUS)
        yield mat, cmp_, store


@pytest.fixture(scope="module")
def workers(s3: tuple[Settings, Settings, ObjectStore]) -> Iterator[tuple[str, str]]:
    mat, cmp_, _ = s3
    with ThreadServer(matting_app(mat, "mw-s3", 0)) as m, \
            ThreadServer(comparison_app(cmp_, "cw-s3", 0)) as c:
        for srv in (m, c):
            wait_for(lambda s=srv: httpx.get(s.url + "/health").json()["status"] == "ok",
                     60, "worker ready")
        yield m.url, c.url


def _post(url: str, route: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + route, json={"task_id": 1, "job_id": "j", **body}, timeout=60,
                      headers=INTERNAL_HEADERS)


def test_round_trip_through_objects_only(workers: tuple[str, str],
                                         s3: tuple[Settings, Settings, ObjectStore]) -> None:
    mat, cmp_, store = s3
    m_url, c_url = workers
    r = _post(m_url, "/matting", {"input": "input/j/sub/p.png",
                                  "output": "matting_output/j/sub/p.png",
                                  "params": {"output": "both"}})
    assert r.status_code == 200, r.text
    assert r.json()["extra"]["alpha_output"] == "matting_output/j/sub/p.alpha.png"
    with Image.open(io.BytesIO(store.get("matting_output/j/sub/p.png"))) as im:
        assert im.mode == "RGBA" and im.size == (60, 40)
    assert store.exists("matting_output/j/sub/p.alpha.png")
    r = _post(c_url, "/compare", {
        "input": "input/j/sub/p.png", "output": "final_results/j/sub/p_compare.jpg",
        "params": {"mattes": [{"model": "identity", "path": "matting_output/j/sub/p.png"}],
                   "gt": "input/j/gt.png", "metrics_output": "final_results/j/sub/p_metrics.json"}})
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(store.get("final_results/j/sub/p_compare.jpg"))) as im:
        assert im.format == "JPEG"
    metrics = json.loads(store.get("final_results/j/sub/p_metrics.json"))
    assert metrics["metrics"] == r.json()["extra"]["metrics"]
    # No shared volume: neither worker wrote anything into its own DATA_DIR.
    for s in (mat, cmp_):
        assert [p for p in s.data_dir.rglob("*") if p.is_file()] == []


def test_missing_input_is_a_clear_400(workers: tuple[str, str]) -> None:
    r = _post(workers[0], "/matting", {"input": "input/j/none.png",
                                       "output": "matting_output/j/none.png"})
    assert r.status_code == 400 and r.json()["retryable"] is False
    assert r.json()["detail"] == "input not found: input/j/none.png"


@pytest.mark.parametrize(("route", "body"), [
    ("/matting", {"input": "input/j/../other/p.png", "output": "matting_output/j/x.png"}),
    ("/matting", {"input": "input/other/p.png", "output": "matting_output/j/x.png"}),
    ("/matting", {"input": "input/j/sub/p.png", "output": "matting_output/other/p.png"}),
    ("/matting", {"input": "input/j/sub/p.png", "output": "matting_output/j/../other/p.png"}),
    ("/matting", {"input": "input/j/sub/p.png", "output": "mattepipe.db"}),
    ("/matting", {"input": "input/j/sub/p.png", "output": "matting_output/j/x.html"}),
    ("/matting", {"input": "input/j/sub/p.png", "output": "final_results/j/p.png"}),
    ("/matting", {"input": "/input/j/sub/p.png", "output": "matting_output/j/x.png"}),
    ("/matting", {"input": "input/j//sub/p.png", "output": "matting_output/j/x.png"}),
    ("/compare", {"input": "input/j/sub/p.png", "output": "final_results/other/p_compare.jpg",
                  "params": {"mattes": [{"model": "m", "path": "matting_output/j/sub/p.png"}]}}),
    ("/compare", {"input": "input/j/sub/p.png", "output": "final_results/j/p.jpg.html",
                  "params": {"mattes": [{"model": "m", "path": "matting_output/j/sub/p.png"}]}}),
    ("/compare", {"input": "input/j/sub/p.png", "output": "final_results/j/p_compare.jpg",
                  "params": {"mattes": [{"model": "m", "path": "matting_output/other/p.png"}]}}),
    ("/compare", {"input": "input/j/sub/p.png", "output": "final_results/j/p_compare.jpg",
                  "params": {"mattes": [{"model": "m", "path": "matting_output/j/sub/p.png"}],
                             "gt": "input/../mattepipe.db"}}),
    ("/compare", {"input": "input/j/sub/p.png", "output": "final_results/j/p_compare.jpg",
                  "params": {"mattes": [{"model": "m", "path": "matting_output/j/sub/p.png"}],
                             "metrics_output": "final_results/j/p.html"}}),
])
def test_keys_outside_the_job_are_refused(workers: tuple[str, str],
                                          s3: tuple[Settings, Settings, ObjectStore],
                                          route: str, body: dict[str, Any]) -> None:
    _, _, store = s3
    before = dict(store.list(""))
    url = workers[0] if route == "/matting" else workers[1]
    r = _post(url, route, body)
    assert r.status_code == 400, r.text
    assert r.json()["retryable"] is False
    after = dict(store.list(""))
    assert {k: v for k, v in after.items() if k not in before} == {}  # nothing written
    for decoy in ("input/other/p.png", "matting_output/other/p.png",
                  "final_results/other/p_compare.jpg", "mattepipe.db"):
        assert store.get(decoy) == PRECIOUS

