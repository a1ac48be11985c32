"""Prometheus metrics: one registry per process and the few series every service shares.

Labels are kept to low-cardinality values (service, route template, status, engine) so a
job with 100 000 images does not become 100 000 series.

Every service's registry also carries prometheus_client's process and platform collectors
(`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …,
`python_info`) and the GPU memory this process holds: per device from NVML when available
(`mattepipe_gpu_process_memory_bytes`, whatever engine allocated it), and torch's allocator
figures in processes that use torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.gpu import process_gpu_memory

__all__ = [
    "BATCH_SIZE",
    "IN_FLIGHT",
    "QUEUE_DEPTH",
    "REGISTRY",
    "REQUESTS",
    "REQUEST_SECONDS",
    "STAGE_ERRORS",
    "STAGE_SECONDS",
    "WORKERS_HEALTHY",
    "metrics_route",
]

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are noise
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

REQUESTS = Counter(
    "mattepipe_http_requests_total",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "mattepipe_http_in_flight", "HTTP requests being handled now.", ["service"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "mattepipe_http_request_seconds",
    "HTTP request latency.",
    ["service", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "mattepipe_batch_size",
    "Images per engine call (dynamic batching).",
    ["service", "engine"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "mattepipe_stage_seconds",
    "Time per phase of one stage request in a worker (wait, batch, total).",
    ["service", "phase"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
STAGE_ERRORS = Counter(
    "mattepipe_stage_errors_total",
    "Stage requests answered with an error, by HTTP status.",
    ["service", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "mattepipe_queue_depth",
    "Requests waiting: for a free worker (balancer) or for a batch slot (worker).",
    ["service"],
    registry=REGISTRY,
)
WORKERS_HEALTHY = Gauge(
    "mattepipe_workers_healthy", "Workers a balancer sees healthy.", ["service"], registry=REGISTRY
)


class _GpuMemoryCollector(Collector):
    """Reads GPU memory at scrape time: this process's use per device from NVML (any engine),
    and torch's allocator figures only in processes that already use torch."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = process_gpu_memory()
        if used:
            family = GaugeMetricFamily(
                "mattepipe_gpu_process_memory_bytes",
                "GPU memory this process uses, as NVML reports it (torch, ONNX Runtime, ...).",
                labels=["device"],
            )
            for device, n in sorted(used.items()):
                family.add_metric([device], float(n))
            yield family
        torch = sys.modules.get("torch")
        if torch is None:
            return
        try:
            if not torch.cuda.is_available() or not torch.cuda.is_initialized():
                return
            allocated = GaugeMetricFamily(
                "mattepipe_gpu_memory_allocated_bytes", "CUDA memory held by tensors.",
                labels=["device"],
            )
            reserved = GaugeMetricFamily(
                "mattepipe_gpu_memory_reserved_bytes", "CUDA memory reserved by the allocator.",
                labels=["device"],
            )
            for i in range(torch.cuda.device_count()):
                allocated.add_metric([str(i)], float(torch.cuda.memory_allocated(i)))
                reserved.add_metric([str(i)], float(torch.cuda.memory_reserved(i)))
        except Exception:  # a scrape must never fail because of the GPU
            return
        yield allocated
        yield reserved

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


REGISTRY.register(_GpuMemoryCollector())


def metrics_route(app: FastAPI, registry: CollectorRegistry = REGISTRY) -> None:
    """Add `GET /metrics` in the Prometheus text format."""

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
