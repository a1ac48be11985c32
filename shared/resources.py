"""The resource line each service writes to its debug log every RESOURCE_LOG_INTERVAL_S:
resident memory, CPU seconds, open files, the service's own queues and its GPU memory.

Process figures come from prometheus_client's `ProcessCollector` (the `process_*` series of
/metrics, read from /proc): on a system without /proc they are left out, as GPU memory is
without NVML (`shared.gpu`). A failing round is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import ProcessCollector

from shared.gpu import process_gpu_memory
from shared.logs import debug_log, safe

__all__ = ["QueueProbe", "log_resources", "resource_loop", "resource_snapshot"]

log = logging.getLogger("mattepipe.resources")

QueueProbe = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
"""A service's own queue figures for the line (sync or async)."""

_PROCESS = ProcessCollector(registry=None)
_PROCESS_KEYS = {
    "process_resident_memory_bytes": "rss_bytes",
    "process_cpu_seconds_total": "cpu_seconds",
    "process_open_fds": "open_fds",
}


def resource_snapshot() -> dict[str, Any]:
    """RSS, CPU seconds and open files of this process, and its GPU memory by device (each
    left out where the platform cannot tell)."""
    out: dict[str, Any] = {}
    for family in _PROCESS.collect():
        for sample in family.samples:
            key = _PROCESS_KEYS.get(sample.name)
            if key is not None:
                out[key] = int(sample.value) if key != "cpu_seconds" else round(sample.value, 2)
    gpu = process_gpu_memory()
    if gpu:
        out["gpu_memory_bytes"] = gpu
    return out


def _line(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={safe(v)}" for k, v in fields.items())


async def log_resources(service: str, queues: QueueProbe | None = None) -> dict[str, Any]:
    """Write one resource line for `service` (and return its fields)."""
    fields = await asyncio.to_thread(resource_snapshot)
    if queues is not None:
        got = queues()
        fields["queues"] = await got if inspect.isawaitable(got) else got
    debug_log.info("resources %s: %s", service, _line(fields), extra={"fields": fields})
    return fields


async def resource_loop(service: str, interval_s: float, queues: QueueProbe | None = None) -> None:
    """One resource line every `interval_s` seconds until cancelled; 0 or less: none."""
    if interval_s <= 0:
        return
    while True:
        try:
            await log_resources(service, queues)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("resource line for %s failed", service)
        await asyncio.sleep(interval_s)
