from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from matting_worker.engines.portrait import PORTRAIT_MODEL, PortraitEngine
from matting_worker.engines.registry import create_engine
from matting_worker.engines.tflite_model import TFLiteEngine
from shared.imaging import decode_rgb

SAMPLES = Path(__file__).resolve().parents[2] / "mattepipe" / "assets" / "samples"
ASTRONAUT = SAMPLES / "astronaut.jpg"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return decode_rgb(ASTRONAUT)


def _soft(alpha: np.ndarray) -> float:
    return float(((alpha > 0.05) & (alpha < 0.95)).mean())


def _coarse_engine() -> PortraitEngine:
    engine = PortraitEngine()
    engine.preset = engine.preset.model_copy(update={"refine": False})
    return engine


def _person_checks(alpha: np.ndarray) -> None:
    """The astronaut photo: a woman's head and shoulders in front of a flag and a shuttle."""
    assert alpha.shape == (512, 512)
    assert 0.15 < float(alpha.mean()) < 0.8
    assert alpha[100:150, 190:250].mean() > 0.9  # face
    assert alpha[300:400, 60:200].mean() > 0.9  # orange suit
    assert alpha[0:64, 0:64].mean() < 0.1  # flag, top left
    assert alpha[0:100, 440:512].mean() < 0.1  # wall, top right
    assert alpha[60:200, 390:450].mean() < 0.15  # shuttle model


def test_model_ships_with_code() -> None:
    assert PORTRAIT_MODEL.is_file()
    assert (PORTRAIT_MODEL.parent / "LICENSE-selfie_segmentation").is_file()


def test_selfie_model_finds_the_person(astronaut: np.ndarray) -> None:
    engine = _coarse_engine()
    alpha = engine.predict([astronaut])[0].alpha
    _person_checks(alpha)
    assert engine.static_hw == (256, 256) and engine.layout == "nhwc"


def test_batched_equals_one_by_one(astronaut: np.ndarray) -> None:
    engine = _coarse_engine()
    images = [astronaut, np.ascontiguousarray(astronaut[50:300, 100:400]), astronaut[::2, ::2]]
    together = engine.predict(images)
    assert [m.alpha.shape for m in together] == [(512, 512), (250, 300), (256, 256)]
    for im, m in zip(images, together, strict=True):
        np.testing.assert_allclose(m.alpha, engine.predict([im])[0].alpha, atol=1e-4)


def test_users_tflite_model(tmp_path: Path, astronaut: np.ndarray) -> None:
    shutil.copy(PORTRAIT_MODEL, tmp_path / "person.tflite")
    (tmp_path / "person.json").write_text('{"preset": "selfie", "refine": false}')
    engine = create_engine("person", tmp_path)
    assert isinstance(engine, TFLiteEngine)
    _person_checks(engine.predict([astronaut])[0].alpha)
    assert engine.info()["format"] == "tflite"


def test_portrait_refines_the_edge(astronaut: np.ndarray) -> None:
    pytest.importorskip("matting_worker.engines.refine", reason="band solver not merged yet")
    coarse = _coarse_engine().predict([astronaut])[0].alpha
    engine = create_engine("portrait", None)
    matte = engine.predict([astronaut])[0]
    alpha = matte.alpha
    _person_checks(alpha)
    assert alpha.dtype == np.float32
    assert _soft(alpha) > 0.001  # a matte, not a cut-out mask
    assert _soft(alpha) < _soft(coarse)  # the edge is tighter than the 256² blob upscaled
    assert float(np.abs(alpha - coarse).mean()) > 0.005  # refinement did something
    if matte.foreground is not None:
        assert matte.foreground.shape == astronaut.shape
