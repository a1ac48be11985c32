"""How much GPU memory a worker takes: GPU_MEMORY_FRACTION of the device it sees, under MIG
its slice, under MPS at most its client cap — and never nvidia-smi's whole-card figure for a
slice. Runs without a GPU: nvidia-smi is a stand-in script on PATH printing what the real one
prints for such cards; with CUDA present torch answers first, so these skip there
(tests/matting_worker/test_gpu.py checks the real card)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matting_worker.engines import device
from shared import gpu
from shared.settings import Settings, get_settings

GIB = 1024**3


def _no_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


pytestmark = pytest.mark.skipif(not _no_cuda() or gpu._nvml() is not None,
                                reason="a GPU answers here; the stand-in is for GPU-less runs")


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Path]]:
    """Put an `nvidia-smi` printing `rows` (its csv answer) first on PATH; the log of the
    arguments it was called with is returned."""
    calls = tmp_path / "calls"

    def install(rows: str) -> Path:
        exe = tmp_path / "nvidia-smi"
        exe.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nprintf '{rows}'\n")
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
        return calls

    monkeypatch.delenv("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", raising=False)
    get_settings.cache_clear()
    yield install
    get_settings.cache_clear()


def _visible(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """CUDA_VISIBLE_DEVICES for what follows (the cached settings hold it too: cleared)."""
    get_settings.cache_clear()
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)


def test_a_whole_card_is_sized_from_its_memory(
    smi: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    smi("81559, Disabled\\n16384, [N/A]\\n")
    _visible(monkeypatch, None)
    assert device.gpu_total_memory() == 81559 * 1024**2
    _visible(monkeypatch, "1")
    assert device.gpu_total_memory() == 16 * GIB
    s = Settings(_env_file=None, gpu_memory_fraction=0.25)  # type: ignore[call-arg]
    assert device.gpu_memory_limit(s) == 4 * GIB


def test_a_mig_slice_is_never_sized_from_the_card(
    smi: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvidia-smi reports the 80 GiB card even when this process sees a 10 GiB slice: a
    slice by uuid is not asked about, and a card in MIG mode answers "unknown"."""
    calls = smi("81920, Enabled\\n")
    _visible(monkeypatch, "MIG-4b3f2a1c-9d8e-5f6a-b7c8-d9e0f1a2b3c4")
    assert device.gpu_total_memory() is None
    assert device.gpu_memory_limit() is None
    assert not calls.exists()  # nvidia-smi was not even run for a slice
    _visible(monkeypatch, None)
    assert device.gpu_total_memory() is None
    assert calls.read_text().count("mig.mode.current") == 1


def test_no_visible_device_is_no_memory(
    smi: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    smi("81920, Disabled\\n")
    _visible(monkeypatch, "")
    assert device.gpu_total_memory() is None


def test_an_mps_cap_bounds_what_the_fraction_applies_to(
    smi: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    smi("81920, Disabled\\n")
    _visible(monkeypatch, "0")
    monkeypatch.setenv("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "0=20G")
    assert device.gpu_total_memory() == 20 * GIB
    s = Settings(_env_file=None, gpu_memory_fraction=0.9)  # type: ignore[call-arg]
    assert device.gpu_memory_limit(s) == int(20 * GIB * 0.9)
    # a cap above the card changes nothing
    monkeypatch.setenv("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "200G")
    assert device.gpu_total_memory() == 80 * GIB


@pytest.mark.parametrize(("limit", "cuda_total", "fraction", "expected"), [
    (None, 80 * GIB, 0.3, 0.3),  # size unknown: the fraction as set
    (int(80 * GIB * 0.3), 80 * GIB, 0.3, 0.3),  # torch's total is the one sized from
    (18 * GIB, 80 * GIB, 0.9, 18 / 80),  # an MPS cap of 20 GiB: 18 GiB of 80
    (90 * GIB, 80 * GIB, 0.9, 1.0),  # never more than the device
    (5, 0, 0.5, 0.5),  # a device reporting nothing: the fraction as set
])
def test_torch_is_given_the_bytes_not_the_fraction(
    limit: int | None, cuda_total: int, fraction: float, expected: float
) -> None:
    assert device.torch_fraction(limit, cuda_total, fraction) == pytest.approx(expected)


def test_memory_share() -> None:
    assert device.memory_share(10 * GIB, 0.9) == int(10 * GIB * 0.9)
    assert device.memory_share(0, 0.5) == 0
