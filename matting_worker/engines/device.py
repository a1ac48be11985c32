"""Where a learned model runs, and how much of the machine it may take.

Several workers share one GPU and one CPU: each keeps to GPU_MEMORY_FRACTION of the card and
to its share of the cores, so one busy worker does not starve or crash the others.
torch is imported lazily: a worker serving `classical` should not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from typing import Any

from shared.settings import Settings, get_settings
from shared.worker.stage import thread_count

__all__ = [
    "apply_visible_devices",
    "configure_torch",
    "cpu_threads",
    "cuda_available",
    "gpu_memory_limit",
    "gpu_total_memory",
    "onnx_providers",
    "openvino_precision",
    "set_cpu_threads",
]

log = logging.getLogger(__name__)


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else get_settings()


def apply_visible_devices(settings: Settings | None = None) -> None:
    """CUDA_VISIBLE_DEVICES from a `.env` file must reach the environment before CUDA starts."""
    value = _settings(settings).cuda_visible_devices
    if value is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = value


_threads_override: int | None = None


def set_cpu_threads(n: int | None) -> None:
    """Override the share for this process (one-process mode takes every core)."""
    global _threads_override
    _threads_override = None if n is None else max(1, n)


def cpu_threads(settings: Settings | None = None) -> int:
    """WORKER_THREADS, else this worker's share of the cores, as the worker core counts it."""
    if _threads_override is not None:
        return _threads_override
    return thread_count(_settings(settings))


def cuda_available() -> bool:
    apply_visible_devices()
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_total_memory() -> int | None:
    """Bytes on the first visible card: from torch, else nvidia-smi, else unknown."""
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except ImportError:
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        index = int(visible) if visible.isdigit() and int(visible) < len(lines) else 0
        return int(float(lines[index]) * 1024**2)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_memory_limit(settings: Settings | None = None) -> int | None:
    """GPU_MEMORY_FRACTION × the card, in bytes; None when the card's size is unknown."""
    total = gpu_total_memory()
    if total is None:
        return None
    return int(total * _settings(settings).gpu_memory_fraction)


def configure_torch(settings: Settings | None = None) -> str:
    """Thread count and memory cap for torch in this process; returns the device to use."""
    import torch

    s = _settings(settings)
    threads = cpu_threads(s)
    torch.set_num_threads(threads)
    # Only settable before the first parallel op; a second engine finds it already set.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(max(1, min(threads, 2)))
    if not cuda_available():
        return "cpu"
    torch.cuda.set_per_process_memory_fraction(s.gpu_memory_fraction, 0)
    log.info("torch on cuda:0, memory fraction %.2f", s.gpu_memory_fraction)
    return "cuda"


def onnx_providers(settings: Settings | None = None) -> tuple[list[Any], Any]:
    """(providers, session options): CUDA capped at its memory share when present, else CPU."""
    import onnxruntime as ort

    apply_visible_devices(settings)
    s = _settings(settings)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads(s)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[Any] = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        cuda: dict[str, Any] = {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
        limit = gpu_memory_limit(s)
        if limit is not None:
            cuda["gpu_mem_limit"] = limit
        else:
            log.warning("GPU size unknown: ONNX Runtime runs without gpu_mem_limit")
        providers.insert(0, ("CUDAExecutionProvider", cuda))
    return providers, opts


def openvino_precision(core: Any, settings: Settings | None = None) -> str:
    """CPU_PRECISION for OpenVINO on this CPU: `auto` is bf16 where the CPU computes it
    natively (AVX-512 BF16 or AMX; OpenVINO lists BF16 then), else f32. bf16 asked for on a
    CPU without it falls back to f32 with a warning: emulated, it would be slower."""
    wanted = _settings(settings).cpu_precision
    if wanted == "f32":
        return "f32"
    try:
        caps = [str(c).upper() for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # an OpenVINO without the property: assume nothing
        caps = []
    if "BF16" in caps:
        return "bf16"
    if wanted == "bf16":
        log.warning("CPU_PRECISION=bf16 but this CPU has no bf16 instructions; running f32")
    return "f32"
