from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from matting_worker.engines.base import EngineError
from matting_worker.engines.learned import LearnedEngine, run_with_backoff, step_threads
from matting_worker.engines.registry import create_engine
from matting_worker.engines.torch_model import TorchEngine, is_torch_oom
from tests.matting_worker.tiny_models import (
    ScriptRVM,
    TinyNet,
    TupleNet,
    export_onnx,
    noise_images,
    save_script,
    save_trace,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _torch_engine(models: Path, name: str) -> TorchEngine:
    engine = create_engine(name, models)
    assert isinstance(engine, TorchEngine)
    return engine


def test_scripted_traced_and_onnx_agree(tmp_path: Path) -> None:
    save_script(TinyNet(), tmp_path / "scripted.pt")
    save_trace(TinyNet(), tmp_path / "traced.torchscript")
    export_onnx(TinyNet(), tmp_path / "exported.onnx")
    images = noise_images(2, (33, 47), (80, 24), (16, 16))
    engines = {name: create_engine(name, tmp_path) for name in ("scripted", "traced", "exported")}
    results = {name: engine.predict(images) for name, engine in engines.items()}
    for mattes in results.values():
        assert [m.alpha.shape for m in mattes] == [(33, 47), (80, 24), (16, 16)]
    scripted = engines["scripted"]
    assert isinstance(scripted, TorchEngine)
    exported = engines["exported"]
    assert isinstance(exported, LearnedEngine)
    # on a GPU torch runs in half precision; on a bf16 CPU the .onnx runs at bf16 (OpenVINO,
    # CPU_PRECISION=auto); else single precision both
    tol = 2e-2 if scripted.half or exported.precision == "bf16" else 1e-4
    assert scripted.half == (scripted.device == "cuda")
    for a, b, c in zip(*results.values(), strict=True):
        np.testing.assert_allclose(a.alpha, b.alpha, atol=1e-5)
        np.testing.assert_allclose(a.alpha, c.alpha, atol=tol)


def test_tuple_output_and_modnet_sizes(tmp_path: Path) -> None:
    save_script(TupleNet(), tmp_path / "modnet_photographic_portrait_matting.pt")
    engine = _torch_engine(tmp_path, "modnet_photographic_portrait_matting")
    assert engine.preset.name == "modnet"
    # MODNet's rule: both sides under 512 → short side to 512, then multiples of 32
    assert engine.target_size(300, 400) == (512, 672)
    assert engine.target_size(400, 300) == (672, 512)
    assert engine.target_size(1000, 2000) == (512, 1024)
    assert engine.target_size(400, 900) == (384, 896)  # spans 512: kept, rounded down
    mattes = engine.predict(noise_images(2, (30, 40), (40, 30)))
    # the last output (the matte) was taken, not the zero maps before it
    assert all(m.alpha.shape == s for m, s in zip(mattes, [(30, 40), (40, 30)], strict=True))
    assert all(m.alpha.max() > 0.1 for m in mattes)


def test_rvm_torchscript_gets_no_states_and_a_ratio(tmp_path: Path) -> None:
    save_script(ScriptRVM(), tmp_path / "rvm_resnet50.torchscript")
    engine = _torch_engine(tmp_path, "rvm_resnet50")
    small, large = engine.predict(noise_images(2, (100, 200), (1024, 768)))
    assert small.alpha.shape == (100, 200) and large.alpha.shape == (1024, 768)
    # the authors' rule: ratio = min(1, 512 / long side)
    np.testing.assert_allclose(small.alpha, 1.0, atol=1e-3)
    np.testing.assert_allclose(large.alpha, 0.5, atol=1e-2)


def test_state_dict_is_refused_with_advice(tmp_path: Path) -> None:
    torch.save(TinyNet().state_dict(), tmp_path / "weights.pt")
    engine = create_engine("weights", tmp_path)
    with pytest.raises(EngineError, match="TorchScript"):
        engine.load()


def test_backoff_halves_until_it_fits() -> None:
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return batch * 2

    shrunk: list[int] = []
    batch = np.arange(7, dtype=np.float32).reshape(7, 1)
    out = run_with_backoff(run, batch, is_torch_oom, shrunk.append)
    np.testing.assert_array_equal(out, batch * 2)  # every item, in order
    assert calls == [7, 4, 2, 2, 3, 2, 1]
    assert shrunk == [7, 4, 3]


def test_backoff_gives_up_at_one_image_as_retryable() -> None:
    def run(batch: np.ndarray) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(EngineError) as info:
        run_with_backoff(run, np.zeros((2, 1), np.float32), is_torch_oom)
    assert info.value.retryable


def test_other_errors_are_not_swallowed() -> None:
    def run(batch: np.ndarray) -> np.ndarray:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        run_with_backoff(run, np.zeros((4, 1), np.float32), is_torch_oom)


def test_engine_survives_oom_and_keeps_smaller_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_script(TinyNet(), tmp_path / "tiny.pt")
    engine = _torch_engine(tmp_path, "tiny")
    images = noise_images(2, *[(24, 24)] * 6)
    expected = [m.alpha for m in engine.predict(images)]
    real_run = engine._run
    seen: list[int] = []

    def tight_memory(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run(batch)

    monkeypatch.setattr(engine, "_run", tight_memory)
    got = engine.predict(images)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.alpha, b, atol=1e-6)
    assert engine.max_batch_size <= 2
    seen.clear()
    engine.predict(images)
    assert max(seen) <= 2  # the next call starts at the size that fitted


def test_thread_count_follows_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matting_worker.engines import device

    monkeypatch.setattr(device, "_threads_override", 1)
    save_script(TinyNet(), tmp_path / "tiny.pt")
    before = torch.get_num_threads()
    try:
        _torch_engine(tmp_path, "tiny").load()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("device", "parts", "cores", "expected"), [
    ("cpu", 1, 8, 1),  # a CPU runtime's inference takes the worker's threads itself
    ("cpu", 3, 8, 3),  # OpenVINO's streams: one step thread per part
    ("cuda", 1, 8, 8),  # on a GPU the steps take the worker's cores, the card waits less
    ("cuda", 1, 0, 1),
])
def test_step_threads(device: str, parts: int, cores: int, expected: int) -> None:
    assert step_threads(device, parts, cores) == expected


def test_a_cpu_torch_engine_does_its_steps_in_turn(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from matting_worker.engines import device

    monkeypatch.setattr(device, "_threads_override", 4)
    save_script(TinyNet(), tmp_path / "tiny.pt")
    engine = _torch_engine(tmp_path, "tiny")
    before = torch.get_num_threads()
    try:
        engine.load()
        assert engine.device == "cpu" and engine._steps is None
    finally:
        torch.set_num_threads(before)
