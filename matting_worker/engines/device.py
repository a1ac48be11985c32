"""Where a learned model runs, and how much of the machine it may take.

Several workers share one GPU and one CPU: each keeps to GPU_MEMORY_FRACTION of the device it
sees (the card; under MIG its slice; under MPS at most its client cap) and to its share of the
cores, so one busy worker does not starve or crash the others.
torch is imported lazily: a worker serving `classical` should not pay for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from shared.gpu import VisibleDevice, first_visible_device, mps_memory_limit, nvml_device_memory
from shared.settings import Settings, get_settings
from shared.worker.stage import thread_count

__all__ = [
    "apply_visible_devices",
    "configure_torch",
    "cpu_threads",
    "cuda_available",
    "gpu_memory_limit",
    "gpu_total_memory",
    "memory_share",
    "onnx_providers",
    "onnxruntime_has_cuda",
    "openvino_cache_dir",
    "openvino_precision",
    "set_cpu_threads",
    "torch_fraction",
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


def _torch_device_memory() -> int | None:
    """What CUDA itself says device 0 holds (its properties' total global memory: under MIG
    the slice's own, as deviceQuery shows it); None without torch or CUDA. The properties,
    not cudaMemGetInfo: reading them makes no CUDA context, which would hold a few hundred MB
    of an ONNX-only worker's card for nothing."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def _smi_memory(visible: VisibleDevice) -> int | None:
    """nvidia-smi's figure, only for a whole card: it reports the card even when this process
    sees one MIG slice of it, so a slice named by uuid, or a card in MIG mode, is unknown here."""
    exe = shutil.which("nvidia-smi")
    if exe is None or visible.kind not in ("default", "index"):
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total,mig.mode.current", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        rows = [[f.strip() for f in ln.split(",")] for ln in out.splitlines() if ln.strip()]
        index = int(visible.value) if visible.value and int(visible.value) < len(rows) else 0
        total, mig = rows[index][0], (rows[index][1:] or [""])[0]
        if mig.lower() == "enabled":
            return None
        return int(float(total) * 1024**2)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def gpu_total_memory() -> int | None:
    """Bytes of the device this worker computes on (CUDA's device 0), capped by its MPS
    limit when it has one; None when unknown. Under MIG that is the slice, not the card:
    CUDA's own figure first (torch), else NVML for the device CUDA_VISIBLE_DEVICES names (a
    `MIG-…` uuid, or the first slice of a card in MIG mode), else nvidia-smi for a whole card."""
    apply_visible_devices()
    visible = first_visible_device(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible.kind == "none":
        return None
    total = _torch_device_memory()
    if total is None:
        total = nvml_device_memory(visible)
    if total is None:
        total = _smi_memory(visible)
    if total is None:
        return None
    mps = mps_memory_limit(os.environ.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"))
    return min(total, mps) if mps is not None else total


def memory_share(total: int, fraction: float) -> int:
    """GPU_MEMORY_FRACTION of `total` bytes (the visible device's), in whole bytes."""
    return int(total * fraction)


def gpu_memory_limit(settings: Settings | None = None) -> int | None:
    """GPU_MEMORY_FRACTION × the visible device, in bytes; None when its size is unknown."""
    total = gpu_total_memory()
    if total is None:
        return None
    return memory_share(total, _settings(settings).gpu_memory_fraction)


def torch_fraction(limit: int | None, cuda_total: int, fraction: float) -> float:
    """The fraction torch is given: torch multiplies it by CUDA's own total, which may be
    more than what `limit` was sized from (an MPS cap), so the bytes are what count."""
    if limit is None or cuda_total <= 0:
        return fraction
    return max(1e-6, min(1.0, limit / cuda_total))


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
    limit = gpu_memory_limit(s)
    cuda_total = int(torch.cuda.mem_get_info(0)[1])
    torch.cuda.set_per_process_memory_fraction(
        torch_fraction(limit, cuda_total, s.gpu_memory_fraction), 0)
    log.info("torch on cuda:0 (%s): %.2f GiB visible, capped at %.2f GiB "
             "(GPU_MEMORY_FRACTION %.2f)", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
             cuda_total / 1024**3, (limit if limit is not None else 0) / 1024**3,
             s.gpu_memory_fraction)
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


def onnxruntime_has_cuda() -> bool:
    """Whether onnxruntime is a CUDA build (it lists CUDAExecutionProvider), without importing
    it when it is not loaded yet: a worker that runs its .onnx models on OpenVINO saves the
    ~20 MiB onnxruntime adds. A CUDA build ships its provider library beside its bindings."""
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        return "CUDAExecutionProvider" in ort.get_available_providers()
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    return any((Path(spec.origin).parent / "capi").glob("*onnxruntime_providers_cuda*"))


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


def openvino_cache_dir(settings: Settings | None = None) -> Path | None:
    """OPENVINO_CACHE_DIR (`~` expanded), created; None when off (empty) or not writable.

    OpenVINO keys a cached compile by the graph's content and the compile options, so an
    edited model file or another precision compiles afresh; a folder that cannot be made is
    logged and skipped (a read-only home in a container), never an engine failure.
    """
    value = _settings(settings).openvino_cache_dir.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as exc:
        log.warning("OPENVINO_CACHE_DIR %s unusable (%s): compiling without a cache", path, exc)
        return None
    return path
