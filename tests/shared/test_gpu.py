"""The device a worker sizes its GPU memory from: CUDA_VISIBLE_DEVICES's first entry (a MIG
slice by uuid too), an MPS client's cap, and NVML's answer for a slice rather than the card.

No GPU here: NVML is a small stand-in with the calls `nvml_device_memory` makes, modelling a
card in MIG mode; the real driver is exercised on a GPU machine by tests/matting_worker/test_gpu.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.gpu import VisibleDevice, first_visible_device, mps_memory_limit, nvml_device_memory

GIB = 1024**3
MIG_UUID = "MIG-4b3f2a1c-9d8e-5f6a-b7c8-d9e0f1a2b3c4"


@pytest.mark.parametrize(("value", "expected"), [
    (None, VisibleDevice("default")),
    ("0", VisibleDevice("index", "0")),
    ("3,1", VisibleDevice("index", "3")),
    (" 2 ", VisibleDevice("index", "2")),
    (MIG_UUID, VisibleDevice("mig", MIG_UUID)),
    (f"{MIG_UUID},0", VisibleDevice("mig", MIG_UUID)),
    # the form drivers before R470 used: still a slice
    ("MIG-GPU-6f2c8e1a-0000-1111-2222-333344445555/1/0",
     VisibleDevice("mig", "MIG-GPU-6f2c8e1a-0000-1111-2222-333344445555/1/0")),
    ("GPU-6f2c8e1a-0000-1111-2222-333344445555",
     VisibleDevice("gpu-uuid", "GPU-6f2c8e1a-0000-1111-2222-333344445555")),
    ("", VisibleDevice("none", "")),
    ("-1", VisibleDevice("none", "-1")),
    ("cuda:0", VisibleDevice("none", "cuda:0")),
])
def test_first_visible_device(value: str | None, expected: VisibleDevice) -> None:
    assert first_visible_device(value) == expected


@pytest.mark.parametrize(("value", "device", "expected"), [
    (None, 0, None),
    ("", 0, None),
    ("8G", 0, 8 * GIB),
    ("8G", 3, 8 * GIB),  # one figure: every device
    ("0=1G,1=512MB", 0, GIB),
    ("0=1G,1=512MB", 1, 512 * 1024**2),
    ("0=1G,1=512MB", 2, None),
    ("0=1.5g", 0, int(1.5 * GIB)),
    ("0=20480M", 0, 20 * GIB),
    ("4096", 0, None),  # no unit: not guessed
    ("lots", 0, None),
    ("0=-1G", 0, None),
])
def test_mps_memory_limit(value: str | None, device: int, expected: int | None) -> None:
    assert mps_memory_limit(value, device) == expected


class NVMLError(Exception):
    pass


@dataclass
class _Memory:
    total: int


@dataclass
class _Handle:
    name: str
    total: int
    mig: int | None = None  # None: the card cannot do MIG (NotSupported)
    slices: tuple[_Handle, ...] = ()


class FakeNVML:
    """The NVML calls of `nvml_device_memory`, over a list of cards and their MIG slices."""

    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, cards: list[_Handle]) -> None:
        self.cards = cards

    def nvmlDeviceGetHandleByIndex(self, i: int) -> _Handle:
        if i >= len(self.cards):
            raise NVMLError("InvalidArgument")
        return self.cards[i]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        for card in self.cards:
            for h in (card, *card.slices):
                if h.name == uuid:
                    return h
        raise NVMLError("NotFound")

    def nvmlDeviceGetMigMode(self, h: _Handle) -> tuple[int, int]:
        if h.mig is None:
            raise NVMLError("NotSupported")
        return h.mig, h.mig

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: _Handle, i: int) -> _Handle:
        if i >= len(h.slices):
            raise NVMLError("NotFound")
        return h.slices[i]

    def nvmlDeviceGetMemoryInfo(self, h: _Handle) -> _Memory:
        return _Memory(h.total)


A100_MIG = _Handle("GPU-aaaa", 80 * GIB, mig=1, slices=(
    _Handle(MIG_UUID, 10 * GIB), _Handle("MIG-second", 20 * GIB)))
H100 = _Handle("GPU-bbbb", 80 * GIB, mig=0)
T4 = _Handle("GPU-cccc", 16 * GIB)  # no MIG at all


@pytest.mark.parametrize(("cards", "visible", "expected"), [
    # a slice named by its uuid: the slice's memory, not the card's 80 GiB
    ([A100_MIG], MIG_UUID, 10 * GIB),
    ([A100_MIG], "MIG-second", 20 * GIB),
    # unset or an index on a card in MIG mode: CUDA's device 0 is the card's first slice
    ([A100_MIG], None, 10 * GIB),
    ([H100, A100_MIG], "1", 10 * GIB),
    # whole cards, with MIG off or without MIG
    ([H100], None, 80 * GIB),
    ([H100, T4], "1", 16 * GIB),
    ([T4], "GPU-cccc", 16 * GIB),
    # nothing to size from: unknown, never another device's figure
    ([A100_MIG], "MIG-gone", None),
    ([H100], "4", None),
    # MIG on, no slice made yet: CUDA shows no device
    ([_Handle("GPU-x", 40 * GIB, mig=1)], None, None),
    ([H100], "", None),
])
def test_nvml_device_memory(cards: list[_Handle], visible: str | None,
                            expected: int | None) -> None:
    assert nvml_device_memory(first_visible_device(visible), FakeNVML(cards)) == expected


def test_without_nvml_nothing_is_known() -> None:
    """This machine has no driver: NVML does not start, and the answer is "unknown"."""
    pytest.importorskip("pynvml")
    from shared import gpu

    if gpu._nvml() is not None:
        pytest.skip("NVML works here (a GPU machine)")
    assert nvml_device_memory(first_visible_device(MIG_UUID)) is None
