"""GPU memory as NVML sees it: what this process holds on each device, whichever engine
allocated it (torch, ONNX Runtime, LiteRT delegates), which torch's own counters cannot show.

`pynvml` (PyPI `nvidia-ml-py`) is optional: without it, without a driver or without a GPU
every function answers "nothing" and never raises; NVML is initialised once per process, and a
failed initialisation is remembered, so a GPU-less machine pays for it once.
Inside a container NVML reports host pids, which may not match ours: then nothing is found for
this process (the field is left out, it is not an error).

Also what the device this process computes on holds in all (`visible_device_memory`): the
MIG slice when CUDA_VISIBLE_DEVICES names one (`MIG-<uuid>`) or the container was given one,
never the whole card's figure; and an MPS client's own cap (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT).
A worker sizes its GPU_MEMORY_FRACTION from that (README, "GPU sharing").
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "VisibleDevice",
    "first_visible_device",
    "mps_memory_limit",
    "nvml_device_memory",
    "process_gpu_memory",
]

_lock = threading.Lock()
_state: dict[str, Any] = {"nvml": None, "tried": False}


def _nvml() -> ModuleType | None:
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                import pynvml

                pynvml.nvmlInit()
                _state["nvml"] = pynvml
            except Exception:  # no package, no driver, no device: no GPU figures
                _state["nvml"] = None
        nvml: ModuleType | None = _state["nvml"]
        return nvml


def process_gpu_memory(pid: int | None = None) -> dict[str, int]:
    """Bytes of GPU memory `pid` (default: this process) uses, by NVML device index; empty
    when NVML is unavailable or the process holds none."""
    nvml = _nvml()
    if nvml is None:
        return {}
    pid = os.getpid() if pid is None else pid
    out: dict[str, int] = {}
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = getattr(proc, "usedGpuMemory", None)
                if proc.pid == pid and isinstance(used, int):
                    out[str(i)] = out.get(str(i), 0) + used
    except Exception:  # a driver hiccup must never break a scrape or a log line
        return {}
    return out


# --- the device this process sees ---------------------------------------------------------


@dataclass(frozen=True)
class VisibleDevice:
    """CUDA_VISIBLE_DEVICES's first entry (the device CUDA calls 0), as CUDA reads it."""

    kind: Literal["default", "none", "index", "gpu-uuid", "mig"]
    """`default`: the variable is unset (the first device the driver or container shows);
    `none`: set to nothing usable (no GPU); `gpu-uuid`: `GPU-…`; `mig`: `MIG-…`, a slice."""
    value: str = ""


def first_visible_device(value: str | None) -> VisibleDevice:
    """What CUDA_VISIBLE_DEVICES=`value` makes device 0. CUDA stops at the first entry it
    cannot read, so an empty or malformed list (or `-1`) hides every device."""
    if value is None:
        return VisibleDevice("default")
    first = value.split(",")[0].strip()
    if first.isdigit():
        return VisibleDevice("index", first)
    if first.startswith("MIG-"):
        return VisibleDevice("mig", first)
    if first.startswith("GPU-"):
        return VisibleDevice("gpu-uuid", first)
    return VisibleDevice("none", first)


_UNITS = {"": None, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MPS_ENTRY = re.compile(r"^(?:(\d+)\s*=\s*)?(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)


def mps_memory_limit(value: str | None, device: int = 0) -> int | None:
    """Bytes CUDA_MPS_PINNED_DEVICE_MEM_LIMIT allows on `device` (`0=8G,1=512M`, or one
    `8G` for every device); None when unset, not for this device, or not understood (a bare
    number has no unit MPS documents: it is ignored rather than guessed)."""
    if not value:
        return None
    for part in value.split(","):
        m = _MPS_ENTRY.match(part.strip())
        if m is None:
            continue
        dev, number, unit = m.groups()
        scale = _UNITS[unit.upper()]
        if scale is None or (dev is not None and int(dev) != device):
            continue
        return int(float(number) * scale)
    return None


def nvml_device_memory(visible: VisibleDevice, nvml: Any = None) -> int | None:
    """Total bytes of `visible` by NVML: a MIG slice's own memory for `MIG-…`, and for an
    index (or nothing named) on a card in MIG mode, its first slice (what CUDA shows as
    device 0); None without NVML or when the device cannot be found. `nvml` is the pynvml
    module (default: this process's, initialised once)."""
    nvml = nvml if nvml is not None else _nvml()
    if nvml is None or visible.kind == "none":
        return None
    try:
        if visible.kind in ("mig", "gpu-uuid"):
            handle = nvml.nvmlDeviceGetHandleByUUID(visible.value)
        else:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(visible.value or 0))
            if _mig_enabled(nvml, handle):
                handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
        return int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception:  # no such device, no slice on a MIG card, a driver hiccup: unknown
        return None


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    """Whether MIG is on for this card (a card without MIG answers NotSupported: off)."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except Exception:
        return False
    return bool(current == nvml.NVML_DEVICE_MIG_ENABLE)
