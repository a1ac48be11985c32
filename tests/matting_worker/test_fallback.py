"""Issue 16: FALLBACK_MODEL takes the images the weight-free engine is unsure of.

The worker runs as a real process with a tiny learned model (built here, untrained but real
ONNX) as its fallback: a cluttered photo, which `classical` scores below FALLBACK_BELOW, is
redone by that model and the answer says so; a clean studio shot is not. A fallback that
cannot run leaves the first answer in place, with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from matting_worker.engines.base import Engine, Matte, RGBImage
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.pool import EnginePool
from matting_worker.stage import MattingStage
from shared.settings import Settings
from tests.matting_worker.tiny_models import TinyNet, export_onnx
from tests.support.servers import INTERNAL_HEADERS, ROOT, ProcessServer

SAMPLE = ROOT / "mattepipe" / "assets" / "samples" / "coffee.jpg"
BELOW = 0.5
"""Between the two paths' ranges (cluttered ≤ 0.35 ≤ studio) with room either side."""


def studio_shot() -> np.ndarray:
    img = np.full((120, 160, 3), 235, np.uint8)
    cv2.circle(img, (80, 60), 32, (40, 90, 160), -1)
    return img


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    (d / "input" / "j").mkdir(parents=True)
    (d / "models").mkdir()
    export_onnx(TinyNet(), d / "models" / "tiny.onnx")
    Image.open(SAMPLE).convert("RGB").resize((160, 120)).save(d / "input/j/photo.png")
    Image.fromarray(studio_shot()).save(d / "input/j/studio.png")
    return d


@pytest.fixture(scope="module")
def worker(data_dir: Path) -> Iterator[ProcessServer]:
    env = {"DATA_DIR": str(data_dir), "MATTING_API_URL": "http://127.0.0.1:9",
           "DEFAULT_MODEL": "classical", "MODELS_DIR": str(data_dir / "models"),
           "FALLBACK_MODEL": "tiny", "FALLBACK_BELOW": str(BELOW)}
    w = ProcessServer("matting_worker", env, ["--worker-id", "mw-fallback"])
    w.start()
    yield w
    w.stop()


def matte(w: ProcessServer, name: str) -> dict[str, Any]:
    body = {"task_id": 1, "job_id": "j", "input": f"input/j/{name}.png",
            "output": f"matting_output/j/{name}.png"}
    r = httpx.post(w.url + "/matting", json=body, timeout=120, headers=INTERNAL_HEADERS)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["status"] == "success", out
    return out


def test_unsure_photo_goes_to_the_fallback_model(worker: ProcessServer, data_dir: Path) -> None:
    extra = matte(worker, "photo")["extra"]
    fb = extra["fallback"]
    assert fb["from"] == "classical" and fb["model"] == "tiny" and "error" not in fb
    assert 0.0 <= fb["confidence"] < BELOW
    assert 0.0 <= extra["confidence"] <= 1.0
    assert extra["route"] == "tiny"
    assert (data_dir / "matting_output/j/photo.png").is_file()


def test_sure_studio_shot_stays_with_classical(worker: ProcessServer) -> None:
    extra = matte(worker, "studio")["extra"]
    assert "fallback" not in extra
    assert extra["route"] == "studio" and BELOW <= extra["confidence"] <= 1.0


class Broken(Engine):
    name = "broken"

    def predict(self, images: list[RGBImage]) -> list[Matte]:  # type: ignore[override]
        raise RuntimeError("no weights")


def test_failing_fallback_keeps_the_first_answer(tmp_path: Path) -> None:
    stage = MattingStage(Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                  fallback_model="broken", fallback_below=BELOW))
    made: dict[str, Engine] = {"classical": ClassicalEngine(), "broken": Broken()}
    stage.pool = EnginePool(made.__getitem__, stage.settings.max_loaded_models)
    photo = np.asarray(Image.open(SAMPLE).convert("RGB").resize((160, 120)), np.uint8)
    engine = stage.engine("classical")
    first = engine.predict([photo])
    out = stage._with_fallback(engine, [photo], first)
    assert out[0].alpha is first[0].alpha
    assert out[0].fallback is not None and out[0].fallback["error"] == "no weights"


def test_misnamed_fallback_stops_the_worker_at_start(tmp_path: Path) -> None:
    stage = MattingStage(Settings(_env_file=None, data_dir=tmp_path,  # type: ignore[call-arg]
                                  models_dir=tmp_path, fallback_model="nope.onnx"))
    with pytest.raises(Exception, match="nope"):
        stage.load()
