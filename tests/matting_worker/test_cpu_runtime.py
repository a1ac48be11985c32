"""Which CPU runtime and precision an .onnx model gets, and that /health-facing info says so."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import openvino_precision, set_cpu_threads
from matting_worker.engines.onnx_model import OnnxEngine
from matting_worker.engines.registry import create_engine
from shared.settings import Settings, get_settings
from tests.matting_worker.step_threads import predict_noting_threads
from tests.matting_worker.zoo_models import FAMILIES, build_zoo_model, scene

U2NETP = next(f for f in FAMILIES if f.rembg == "u2netp")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    build_zoo_model(tmp_path / "u2netp.onnx", U2NETP)
    set_cpu_threads(None)  # no one-process override left behind: WORKER_THREADS decides
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


# --- issue 14, point 2: OpenVINO's streams, its compile cache, no onnxruntime import -------

def test_streams_give_one_requests_answers(models: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """Two threads: two single-thread streams run a batch's images at once, each answer the
    one a lone request gives (the parts come back in order)."""
    pytest.importorskip("openvino")
    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", CPU_PRECISION="f32", WORKER_THREADS="1",
         OPENVINO_CACHE_DIR=str(tmp_path / "cache"))
    single = _loaded(models)
    assert single.parallel_parts == 1 and single._ov_queue is None
    images = [scene(200 + 30 * i, 260, i) for i in range(5)]
    alone = [single.predict([im])[0].alpha for im in images]
    _set(monkeypatch, WORKER_THREADS="2")
    engine = _loaded(models)
    assert engine.parallel_parts == 2 and engine._ov_queue is not None
    together = engine.predict(images)
    assert len(together) == len(images)
    for a, m in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, m.alpha)
    engine.unload()
    assert engine.handle is None and engine._ov_queue is None


def test_streams_are_capped(models: Path, monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    """WORKER_THREADS far above the cap still gets OPENVINO_MAX_STREAMS streams, no more."""
    pytest.importorskip("openvino")
    from matting_worker.engines.onnx_model import OPENVINO_MAX_STREAMS

    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", WORKER_THREADS="64",
         OPENVINO_CACHE_DIR=str(tmp_path / "cache"))
    engine = _loaded(models)
    assert engine.parallel_parts == OPENVINO_MAX_STREAMS
    assert len(engine.predict([scene(90, 120, s) for s in range(6)])) == 6


def test_compiled_model_is_cached(models: Path, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    """The first load writes the compiled model to OPENVINO_CACHE_DIR; the next reuse it, at
    either precision (OpenVINO applies the precision when it reads the blob back), and every
    answer is the one an uncached compile at that precision gives."""
    pytest.importorskip("openvino")
    cache = tmp_path / "deep" / "cache"
    rgb = scene(120, 160, 3)
    answers: dict[tuple[str, bool], np.ndarray] = {}
    for cached in (False, True, True):
        for precision in ("f32", "auto"):
            _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", CPU_PRECISION=precision,
                 OPENVINO_CACHE_DIR=str(cache) if cached else "")
            engine = _loaded(models)
            alpha = engine.predict([rgb])[0].alpha
            seen = answers.setdefault((engine.precision, cached), alpha)
            np.testing.assert_array_equal(seen, alpha)
            np.testing.assert_array_equal(answers[(engine.precision, False)], alpha)
        if cached:
            assert len(list(cache.iterdir())) == 1  # one blob, reused


def test_cache_off_or_unusable_is_no_failure(models: Path, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    from matting_worker.engines.device import openvino_cache_dir

    assert openvino_cache_dir(Settings(openvino_cache_dir="")) is None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert openvino_cache_dir(Settings(openvino_cache_dir=str(blocker / "cache"))) is None
    pytest.importorskip("openvino")
    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", OPENVINO_CACHE_DIR=str(blocker / "cache"))
    assert _loaded(models).runtime == "openvino"


def test_openvino_worker_does_not_import_onnxruntime(models: Path) -> None:
    """A fresh process that runs an .onnx model on OpenVINO never loads onnxruntime."""
    pytest.importorskip("openvino")
    import os
    import subprocess

    code = ("import sys; from pathlib import Path; "
            "from matting_worker.engines.registry import create_engine; "
            "e = create_engine('u2netp', Path(sys.argv[1])); e.load(); "
            "print(e.runtime, 'onnxruntime' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "ONNX_CPU_RUNTIME": "auto",
           "OPENVINO_CACHE_DIR": ""}
    out = subprocess.run([sys.executable, "-c", code, str(models)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["openvino", "False"]


def test_steps_around_the_model_run_side_by_side(models: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """With two streams, a batch's resizes and normalisations run on the engine's two step
    threads (one after the other they left a core idle between inferences); the answers are
    those of one thread, in order, and unloading ends the threads (a reload makes them anew)."""
    pytest.importorskip("openvino")
    _set(monkeypatch, ONNX_CPU_RUNTIME="openvino", CPU_PRECISION="f32", WORKER_THREADS="1",
         OPENVINO_CACHE_DIR=str(tmp_path / "cache"))
    single = _loaded(models)
    assert single._steps is None
    images = [scene(150 + 40 * i, 210 + 10 * i, i) for i in range(4)]
    alone = [m.alpha for m in single.predict(images)]
    _set(monkeypatch, WORKER_THREADS="2")
    engine = _loaded(models)
    assert engine._steps is not None
    together, seen = predict_noting_threads(engine, images, monkeypatch)
    assert seen and all(name.startswith("u2netp-steps") for name in seen)
    for a, m in zip(alone, together, strict=True):
        assert m.alpha.shape == a.shape
        np.testing.assert_array_equal(a, m.alpha)
    engine.unload()
    assert engine._steps is None
    engine.load()
    assert engine._steps is not None
    assert len(engine.predict(images[:2])) == 2
