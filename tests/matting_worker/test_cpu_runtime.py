"""Which CPU runtime and precision an .onnx model gets, and that /health-facing info says so."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import openvino_precision
from matting_worker.engines.onnx_model import OnnxEngine
from matting_worker.engines.registry import create_engine
from shared.settings import Settings, get_settings
from tests.matting_worker.zoo_models import FAMILIES, build_zoo_model, scene

U2NETP = next(f for f in FAMILIES if f.rembg == "u2netp")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    build_zoo_model(tmp_path / "u2netp.onnx", U2NETP)
    yield tmp_path
    monkeypatch.undo()
    get_settings.cache_clear()


def _set(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


def _loaded(models: Path) -> OnnxEngine:
    engine = create_engine("u2netp", models)
    assert isinstance(engine, OnnxEngine)
    engine.load()
    return engine


def test_onnxruntime_when_asked(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, ONNX_CPU_RUNTIME="onnxruntime")
    engine = _loaded(models)
    info = engine.info()
    assert (info["runtime"], info["precision"], info["device"]) == ("onnxruntime", "f32", "cpu")


def test_openvino_f32_gives_onnxruntimes_answer(models: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    rgb = scene(300, 400, 1)
    _set(monkeypatch, ONNX_CPU_RUNTIME="onnxruntime")
    reference = _loaded(models).predict([rgb])[0].alpha
    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", CPU_PRECISION="f32")
    engine = _loaded(models)
    assert (engine.runtime, engine.precision) == ("openvino", "f32")
    alpha = engine.predict([rgb, rgb])  # batches of a batch-1 graph, image by image
    for matte in alpha:
        assert np.abs(np.rint(matte.alpha * 255) - np.rint(reference * 255)).max() <= 1


def test_openvino_asked_for_but_missing_is_a_clear_error(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(EngineError, match="pip install openvino"):
        _loaded(models)


def test_auto_without_openvino_falls_back_to_onnxruntime(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set(monkeypatch, ONNX_CPU_RUNTIME="auto")
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert _loaded(models).runtime == "onnxruntime"


class _Core:
    """An OpenVINO Core as far as `openvino_precision` reads it: the CPU's capabilities."""

    def __init__(self, caps: list[str]) -> None:
        self.caps = caps

    def get_property(self, device: str, name: str) -> list[str]:
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.caps


@pytest.mark.parametrize(
    ("setting", "caps", "expect"),
    [
        ("auto", ["FP32", "BF16", "INT8"], "bf16"),
        ("auto", ["FP32", "INT8"], "f32"),
        ("bf16", ["FP32"], "f32"),  # never emulated: slower than f32
        ("f32", ["FP32", "BF16"], "f32"),  # the switch for rembg's exact answers
    ],
)
def test_precision_follows_the_cpu(setting: str, caps: list[str], expect: str) -> None:
    s = Settings(cpu_precision=setting)  # type: ignore[arg-type]
    assert openvino_precision(_Core(caps), s) == expect


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="cpu_precision"):
        Settings(cpu_precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="onnx_cpu_runtime"):
        Settings(onnx_cpu_runtime="tensorrt")  # type: ignore[arg-type]


def test_matte_folder_says_what_the_model_ran_on(models: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from matting_worker.oneshot import matte_folder

    _set(monkeypatch, ONNX_CPU_RUNTIME="onnxruntime")
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(scene(60, 80, 2)).save(src / "a.png")
    res = matte_folder(src, tmp_path / "out", "u2netp", models)
    assert res.done == 1 and res.runs_on == "onnxruntime f32"
