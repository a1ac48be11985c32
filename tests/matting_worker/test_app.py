"""The matting worker as a real process: `python -m matting_worker --port P`."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from shared.settings import Settings
from tests.support.servers import INTERNAL_HEADERS, ROOT, ProcessServer

SAMPLE = ROOT / "mattepipe" / "assets" / "samples" / "chelsea.jpg"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "input" / "j" / "sub").mkdir(parents=True)
    Image.open(SAMPLE).convert("RGB").resize((96, 64)).save(d / "input/j/sub/cat.jpg")
    (d / "input/j/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "secret.txt").write_text("outside the input tree but inside DATA_DIR")
    return d


@pytest.fixture(scope="module")
def worker(data_dir: Path) -> Iterator[ProcessServer]:
    env = {"DATA_DIR": str(data_dir), "MATTING_API_URL": "http://127.0.0.1:9",
           "DEFAULT_MODEL": "classical", "MAX_BATCH_SIZE": "8"}
    w = ProcessServer("matting_worker", env, ["--worker-id", "mw-test"])
    w.start()
    yield w
    w.stop()


def post(w: ProcessServer, body: dict[str, Any]) -> httpx.Response:
    full = {"task_id": 1, "job_id": "j", **body}
    return httpx.post(w.url + "/matting", json=full, timeout=60, headers=INTERNAL_HEADERS)


def test_health_and_info(worker: ProcessServer) -> None:
    h = httpx.get(worker.url + "/health").json()
    assert h == {"status": "ok", "service": "matting", "worker_id": "mw-test", "detail": ""}
    info = httpx.get(worker.url + "/info", headers=INTERNAL_HEADERS).json()
    assert info["stage"]["engine"] == "classical" and info["capacity"] == 8


def test_image_becomes_rgba_png_of_the_same_size(worker: ProcessServer, data_dir: Path) -> None:
    r = post(worker, {"input": "input/j/sub/cat.jpg", "output": "matting_output/j/sub/cat.png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success" and body["worker_id"] == "mw-test"
    assert body["output"] == "matting_output/j/sub/cat.png"
    t = body["timings"]
    assert t["queued"] <= t["started"] <= t["finished"] and t["batch_size"] >= 1
    with Image.open(data_dir / body["output"]) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGBA", (96, 64))
        alpha = np.asarray(im.getchannel("A"))
    assert alpha.min() < 128 < alpha.max()  # the classical engine found a cut, not a blank
    leftovers = [p.name for p in (data_dir / "matting_output/j/sub").iterdir()]
    assert leftovers == ["cat.png"]  # no temporary file left behind


def test_alpha_and_both_output_modes(worker: ProcessServer, data_dir: Path) -> None:
    r = post(worker, {"input": "input/j/sub/cat.jpg", "output": "matting_output/j/a.png",
                      "params": {"output": "alpha"}})
    assert r.status_code == 200, r.text
    with Image.open(data_dir / "matting_output/j/a.png") as im:
        assert (im.mode, im.size) == ("L", (96, 64))
    r = post(worker, {"input": "input/j/sub/cat.jpg", "output": "matting_output/j/b.png",
                      "params": {"output": "both"}})
    assert r.status_code == 200, r.text
    assert r.json()["extra"]["alpha_output"] == "matting_output/j/b.alpha.png"
    with Image.open(data_dir / "matting_output/j/b.png") as im:
        assert im.mode == "RGBA"
    with Image.open(data_dir / "matting_output/j/b.alpha.png") as im:
        assert im.mode == "L"


def test_other_engine_is_loaded_on_first_use(worker: ProcessServer, data_dir: Path) -> None:
    r = post(worker, {"input": "input/j/sub/cat.jpg", "output": "matting_output/j/id.png",
                      "params": {"models": ["identity"]}})
    assert r.status_code == 200, r.text
    with Image.open(data_dir / "matting_output/j/id.png") as im:
        assert np.asarray(im.getchannel("A")).min() == 255
    info = httpx.get(worker.url + "/info", headers=INTERNAL_HEADERS).json()
    assert "identity" in info["stage"]["engines"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"input": "../outside.jpg", "output": "matting_output/j/x.png"}, "DATA_DIR"),
        ({"input": "/etc/passwd", "output": "matting_output/j/x.png"}, "DATA_DIR"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/../../x.png"}, "DATA_DIR"),
        ({"input": "input/j/broken.jpg", "output": "matting_output/j/x.png"}, "image"),
        # inside DATA_DIR but outside the job's input folder: refused before it is read
        ({"input": "secret.txt", "output": "matting_output/j/x.png"}, "input/j/"),
        ({"input": "input/j/missing.jpg", "output": "matting_output/j/x.png"}, "not found"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/j/x.png",
          "params": {"models": ["no-such-model"]}}, "unknown model"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/j/x.png",
          "params": {"model": "identity"}}, "params.model: Extra inputs"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/j/x.png",
          "params": {"models": ["identity", "identity"]}}, "params.models"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/j/x.png",
          "params": {"output": "cmyk"}}, "params.output"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/j/x.jpg"}, ".png"),
        # a worker writes only its own stage's folder of the job it was given
        ({"input": "input/j/sub/cat.jpg", "output": "mattepipe.png"}, "matting_output/j/"),
        ({"input": "input/j/sub/cat.jpg", "output": "final_results/j/x.png"},
         "matting_output/j/"),
        ({"input": "input/j/sub/cat.jpg", "output": "matting_output/other/x.png"},
         "matting_output/j/"),
        ({"input": "input/j/sub/cat.jpg", "output": "input/j/sub/cat.png"}, "matting_output/j/"),
        ({"input": "input/other/cat.jpg", "output": "matting_output/j/x.png"}, "input/j/"),
    ],
)
def test_bad_requests_are_refused_for_good(
    worker: ProcessServer, data_dir: Path, body: dict[str, Any], reason: str
) -> None:
    r = post(worker, body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["status"] == "error" and err["retryable"] is False
    assert reason.lower() in err["detail"].lower()
    assert not (data_dir / "matting_output/j/x.png").exists()
    for stray in ("mattepipe.png", "final_results/j/x.png", "matting_output/other/x.png",
                  "input/j/sub/cat.png"):
        assert not (data_dir / stray).exists(), stray


def test_malformed_request_is_422_not_retryable(worker: ProcessServer) -> None:
    r = httpx.post(worker.url + "/matting", json={"input": "a.jpg"}, headers=INTERNAL_HEADERS)
    assert r.status_code == 422
    assert r.json()["retryable"] is False and "task_id" in r.json()["detail"]


def test_concurrent_requests_are_batched_and_counted(worker: ProcessServer) -> None:
    def one(i: int) -> httpx.Response:
        return post(worker, {"task_id": i, "input": "input/j/sub/cat.jpg",
                             "output": f"matting_output/j/c{i}.png"})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(12)))
    assert all(a.status_code == 200 for a in answers)
    sizes = [a.json()["timings"]["batch_size"] for a in answers]
    assert all(1 <= s <= 4 for s in sizes)  # classical engine: max_batch_size 4
    metrics = httpx.get(worker.url + "/metrics", headers=INTERNAL_HEADERS).text
    assert 'mattepipe_batch_size_count{engine="classical",service="matting"}' in metrics
    text = io.StringIO(metrics).read()
    assert "mattepipe_http_requests_total" in text


def _nice_of(pid: int) -> int:
    # Field 19 of /proc/<pid>/stat (the main thread's); the name field "(python)" has no space.
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_worker_runs_at_worker_nice_below_the_gateway(worker: ProcessServer) -> None:
    # WORKER_NICE's default (10): on a busy box the gateway's answers win a CPU over the
    # worker's inference (shared.priority); pytest itself runs at the gateway's priority.
    assert worker.proc is not None
    assert _nice_of(worker.proc.pid) == max(Settings().worker_nice, os.nice(0))
