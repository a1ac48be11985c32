"""The CUDA paths: memory share, half precision, and a real out-of-memory that halves the batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from matting_worker.engines import device
from matting_worker.engines.registry import create_engine
from matting_worker.engines.torch_model import TorchEngine
from shared.settings import get_settings
from tests.matting_worker.step_threads import predict_noting_threads
from tests.matting_worker.tiny_models import TinyNet, save_script

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def set_fraction(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """GPU_MEMORY_FRACTION for one test; the card is given back whole afterwards."""

    def apply(value: float) -> None:
        monkeypatch.setenv("GPU_MEMORY_FRACTION", str(value))
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(1.0, 0)


def _engine(tmp_path: Path, name: str, width: int = 4, json: str = "") -> TorchEngine:
    save_script(TinyNet(width), tmp_path / f"{name}.pt")
    if json:
        (tmp_path / f"{name}.json").write_text(json)
    engine = create_engine(name, tmp_path)
    assert isinstance(engine, TorchEngine)
    return engine


def _total() -> int:
    return int(torch.cuda.get_device_properties(0).total_memory)


def test_memory_fraction_is_enforced(
    tmp_path: Path, set_fraction: Callable[[float], None]
) -> None:
    set_fraction(0.05)
    engine = _engine(tmp_path, "tiny")
    engine.load()
    assert engine.device == "cuda"
    assert device.gpu_memory_limit() == int(_total() * 0.05)
    small = torch.empty(int(_total() * 0.01), dtype=torch.uint8, device="cuda")
    del small
    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(int(_total() * 0.1), dtype=torch.uint8, device="cuda")


def test_half_precision_matches_cpu(
    tmp_path: Path, set_fraction: Callable[[float], None]
) -> None:
    set_fraction(0.2)
    engine = _engine(tmp_path, "tiny")
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(70, 90), (33, 20)]]
    got = engine.predict(images)
    assert engine.device == "cuda" and engine.half
    assert next(engine.model.parameters()).dtype == torch.float16
    cpu = TinyNet().eval()
    for im, m in zip(images, got, strict=True):
        x = torch.from_numpy(engine.preprocess(im, engine.target_size(*im.shape[:2])))[None]
        with torch.no_grad():
            ref = engine.postprocess(cpu(x)[0, 0].numpy(), *im.shape[:2])
        assert m.alpha.shape == im.shape[:2]
        np.testing.assert_allclose(m.alpha, ref, atol=2e-2)


def test_real_out_of_memory_halves_the_batch(
    tmp_path: Path, set_fraction: Callable[[float], None]
) -> None:
    # 64 channels at 1024² in fp16 is 128 MiB a map; eight images do not fit in ~1.5 GiB.
    set_fraction(1.5 * 1024**3 / _total())
    engine = _engine(tmp_path, "wide", width=64,
                     json='{"input_size": 1024, "max_batch_size": 8}')
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(8)]
    mattes = engine.predict(images)
    assert len(mattes) == 8 and all(m.alpha.shape == (300, 400) for m in mattes)
    assert 1 <= engine.max_batch_size < 8
    one = engine.predict(images[:1])[0]
    np.testing.assert_allclose(mattes[0].alpha, one.alpha, atol=1e-3)


class _Heavy(nn.Module):
    """TinyNet's answer plus 64 Mi unused floats: a model whose memory is easy to see."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()
        self.ballast = nn.Parameter(torch.zeros(64 * 1024 * 1024))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 0.0 * self.ballast[0]


def test_an_evicted_engine_gives_its_gpu_memory_back(tmp_path: Path) -> None:
    """MAX_LOADED_MODELS=1: loading the second model unloads the first, and the CUDA memory
    torch held for it (allocated and cached) goes back."""
    from matting_worker.engines.pool import EnginePool

    for name in ("a", "b"):
        save_script(_Heavy(), tmp_path / f"{name}.pt")
    torch.cuda.empty_cache()
    base, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    pool = EnginePool(lambda n: create_engine(n, tmp_path), 1)
    pool.engine("a")
    one = torch.cuda.memory_allocated() - base
    assert one >= 100 * 1024**2  # the ballast is on the card (fp32 256 MB, or fp16 128 MB)
    pool.engine("b")
    assert list(pool.loaded()) == ["b"]
    assert torch.cuda.memory_allocated() - base <= one + 16 * 1024**2  # a's memory went
    # and torch's cache gave a's blocks back to the driver (not kept for reuse)
    assert torch.cuda.memory_reserved() - reserved <= one + 64 * 1024**2


def test_the_steps_around_the_model_use_the_workers_cores(
    tmp_path: Path, set_fraction: Callable[[float], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the card, a batch's resizes and normalisations run on `cpu_threads()` step threads
    (one after the other they kept the card waiting); the answers are those of one thread."""
    set_fraction(0.05)
    monkeypatch.setattr(device, "_threads_override", 3)
    engine = _engine(tmp_path, "tiny")
    engine.load()
    assert engine.device == "cuda"
    assert engine._steps is not None and engine._steps._max_workers == 3
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (60 + 7 * i, 80, 3), dtype=np.uint8) for i in range(6)]
    together, seen = predict_noting_threads(engine, images, monkeypatch)
    assert seen and all(name.startswith("tiny-steps") for name in seen)
    steps, engine._steps = engine._steps, None
    try:
        alone = engine.predict(images)
    finally:
        engine._steps = steps
    for a, m in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.alpha, m.alpha)
