"""GPU memory as NVML sees it: what this process holds on each device, whichever engine
allocated it (torch, ONNX Runtime, LiteRT delegates), which torch's own counters cannot show.

`pynvml` (PyPI `nvidia-ml-py`) is optional: without it, without a driver or without a GPU
every function answers "nothing" and never raises; NVML is initialised once per process, and a
failed initialisation is remembered, so a GPU-less machine pays for it once.
Inside a container NVML reports host pids, which may not match ours: then nothing is found for
this process (the field is left out, it is not an error).
"""

from __future__ import annotations

import os
import threading
from types import ModuleType
from typing import Any

__all__ = ["process_gpu_memory"]

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
