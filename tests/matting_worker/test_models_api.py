"""Models through a real worker process (and its balancer): MAX_LOADED_MODELS seen on
`GET /models`, a replaced file used by the next request, `POST /models/reload`, and zoo models
missing (a clear 400) or fetched on first use from a mirror on 127.0.0.1."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.matting_worker.test_engine_pool import const_model
from tests.support.model_server import ModelMirror, serving_models, zoo_file
from tests.support.servers import INTERNAL_HEADERS, ProcessServer


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    (tmp_path / "data/input/j").mkdir(parents=True)
    Image.new("RGB", (48, 32), (120, 90, 60)).save(tmp_path / "data/input/j/x.png")
    (tmp_path / "models").mkdir()
    for name, value in (("low", 0.2), ("high", 0.8)):
        const_model(tmp_path / "models" / f"{name}.onnx", value)
    return tmp_path


def _worker(root: Path, **env: str) -> ProcessServer:
    base = {"DATA_DIR": str(root / "data"), "MODELS_DIR": str(root / "models"),
            "MATTING_API_URL": "http://127.0.0.1:9", "DEFAULT_MODEL": "classical",
            "MAX_LOADED_MODELS": "1"}
    return ProcessServer("matting_worker", {**base, **env}, ["--worker-id", "mw-models"])


@pytest.fixture()
def worker(data: Path) -> Iterator[ProcessServer]:
    w = _worker(data).start()
    yield w
    w.stop()


def matte(w: ProcessServer, model: str, out: str) -> httpx.Response:
    body = {"task_id": 1, "job_id": "j", "input": "input/j/x.png",
            "output": f"matting_output/j/{out}.png", "params": {"models": [model],
                                                                "output": "alpha"}}
    return httpx.post(w.url + "/matting", json=body, timeout=120, headers=INTERNAL_HEADERS)


def alpha_mean(root: Path, out: str) -> float:
    with Image.open(root / f"data/matting_output/j/{out}.png") as im:
        return float(np.asarray(im).mean()) / 255


def loaded(url: str) -> list[str]:
    body: dict[str, Any] = httpx.get(url + "/models", headers=INTERNAL_HEADERS).json()
    return [m["name"] for m in body["loaded"]]


def test_two_models_alternate_under_a_limit_of_one(worker: ProcessServer, data: Path) -> None:
    assert loaded(worker.url) == ["classical"]
    for i, name in enumerate(["low", "high", "low"]):
        r = matte(worker, name, f"a{i}")
        assert r.status_code == 200, r.text
        assert loaded(worker.url) == [name]  # the other one was unloaded
    assert alpha_mean(data, "a0") == pytest.approx(0.2, abs=0.01)
    assert alpha_mean(data, "a1") == pytest.approx(0.8, abs=0.01)
    body = httpx.get(worker.url + "/models", headers=INTERNAL_HEADERS).json()
    assert body["max_loaded"] == 1 and body["unloads"] == 3
    assert httpx.get(worker.url + "/models").status_code == 401  # internal plane only


def test_a_replaced_file_is_used_by_the_next_request(worker: ProcessServer, data: Path) -> None:
    assert matte(worker, "low", "b0").status_code == 200
    const_model(data / "models/low.onnx", 0.6)
    assert matte(worker, "low", "b1").status_code == 200
    assert alpha_mean(data, "b0") == pytest.approx(0.2, abs=0.01)
    assert alpha_mean(data, "b1") == pytest.approx(0.6, abs=0.01)


def test_reload_through_the_balancer(worker: ProcessServer, data: Path) -> None:
    api = ProcessServer("matting_api", {"DATA_DIR": str(data / "data"),
                                        "WORKER_URLS": worker.url}).start()
    try:
        assert matte(worker, "high", "c0").status_code == 200
        r = httpx.post(api.url + "/models/reload", json={}, headers=INTERNAL_HEADERS, timeout=60)
        assert r.status_code == 200, r.text
        [one] = r.json()["workers"]
        assert one["status"] == 200 and one["answer"]["reloaded"] == ["high"]
        assert one["answer"]["worker_id"] == "mw-models"
        listed = httpx.get(api.url + "/models", headers=INTERNAL_HEADERS).json()["workers"]
        assert [m["name"] for m in listed[0]["answer"]["loaded"]] == ["high"]
        assert httpx.post(api.url + "/models/reload").status_code == 401
        bad = httpx.post(api.url + "/models/reload", json={"models": "high"},
                         headers=INTERNAL_HEADERS)
        assert bad.status_code == 422
    finally:
        api.stop()


def test_a_zoo_model_not_downloaded_is_refused_with_how_to_get_it(worker: ProcessServer
                                                                  ) -> None:
    r = matte(worker, "u2netp", "d0")  # in the packaged zoo, not in MODELS_DIR
    assert r.status_code == 400
    body = r.json()
    assert body["retryable"] is False
    assert "run `mattepipe models pull u2netp`" in body["detail"]
    assert "MODEL_DOWNLOAD=1" in body["detail"]


def test_a_zoo_model_is_fetched_on_first_use(data: Path) -> None:
    (data / "mirror").mkdir()
    blob = const_model(data / "mirror/Tiny-epoch_1.onnx", 0.3).read_bytes()
    mirror = ModelMirror({"Tiny-epoch_1.onnx": blob})
    with serving_models(mirror) as base:
        zoo = zoo_file(data / "zoo.json", "https://example.invalid/never", {
            "Tiny-epoch_1.onnx": blob})
        # the catalogue's name is the file's stem; rename it as a zoo entry would be
        zoo.write_text(zoo.read_text().replace('"name": "Tiny-epoch_1"', '"name": "tiny"'))
        w = _worker(data, MODEL_DOWNLOAD="1", MODEL_CATALOGUE=str(zoo),
                    MODEL_BASE_URL=base).start()
        try:
            r = matte(w, "tiny", "e0")
            assert r.status_code == 200, r.text
            assert matte(w, "tiny", "e1").status_code == 200
        finally:
            w.stop()
    saved = data / "models/tiny.onnx"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert alpha_mean(data, "e0") == pytest.approx(0.3, abs=0.01)
    assert mirror.full_gets("Tiny-epoch_1.onnx") == 1


def test_a_corrupt_zoo_download_rejects_the_item_and_leaves_nothing(data: Path) -> None:
    mirror = ModelMirror({"tiny.onnx": b"garbage, not the published file"})
    with serving_models(mirror) as base:
        zoo = zoo_file(data / "zoo.json", base, {"tiny.onnx": b"x"},
                       {"tiny.onnx": "md5:" + "0" * 32})
        w = _worker(data, MODEL_DOWNLOAD="1", MODEL_CATALOGUE=str(zoo)).start()
        try:
            r = matte(w, "tiny", "f0")
        finally:
            w.stop()
    assert r.status_code == 400, r.text
    assert "does not match its published md5" in r.json()["detail"]
    assert "It was deleted" in r.json()["detail"]
    left = sorted(p.name for p in (data / "models").iterdir())
    assert left == [".tiny.onnx.lock", "high.onnx", "low.onnx"]  # no model, no part
