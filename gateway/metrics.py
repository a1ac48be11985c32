"""The gateway's Prometheus metrics, on a registry of its own (one per app, so tests can run
several apps in one process); `/metrics` shows them after the process-wide shared series
(HTTP requests of `shared.logs`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shared.metrics import REGISTRY as SHARED_REGISTRY
from shared.stages import Stage

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks = Gauge("mattepipe_gateway_tasks", "Tasks by state", ["state"], registry=r)
        self.jobs = Gauge("mattepipe_gateway_jobs", "Jobs by state", ["state"], registry=r)
        self.queue_depth = Gauge(
            "mattepipe_gateway_queue_depth", "Tasks waiting for a stage", ["stage"], registry=r
        )
        self.inflight = Gauge(
            "mattepipe_gateway_inflight", "Stage requests in flight", ["stage"], registry=r
        )
        self.stage_seconds = Histogram(
            "mattepipe_gateway_stage_seconds",
            "Worker time per image (started → finished, as the worker reports it)",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.roundtrip_seconds = Histogram(
            "mattepipe_gateway_stage_roundtrip_seconds",
            "Gateway-side time per stage request (balancer queue and batching included)",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "mattepipe_gateway_task_retries", "Failed attempts that will be retried", ["stage"],
            registry=r,
        )
        self.permanent_failures = Counter(
            "mattepipe_gateway_task_permanent_failures", "Tasks failed for good", ["stage"],
            registry=r,
        )
        self.unavailable = Counter(
            "mattepipe_gateway_stage_unavailable",
            "Stage calls refused (503) or unreachable; the task is requeued, not counted",
            ["stage"],
            registry=r,
        )
        self.late_answers = Counter(
            "mattepipe_gateway_late_answers", "Stage answers ignored: lease re-taken or job gone",
            ["stage"], registry=r,
        )

        for stage in Stage:  # every series visible from the start
            for metric in (self.queue_depth, self.inflight, self.stage_seconds,
                           self.roundtrip_seconds, self.retries, self.permanent_failures,
                           self.unavailable, self.late_answers):
                metric.labels(stage)

    def set_counts(self, tasks: dict[str, int], jobs: dict[str, int],
                   task_states: list[str], job_states: list[str]) -> None:
        for st in task_states:
            self.tasks.labels(st).set(tasks.get(st, 0))
        for st in job_states:
            self.jobs.labels(st).set(jobs.get(st, 0))
        for stage in Stage:
            self.queue_depth.labels(stage).set(tasks.get(stage.queued_state, 0))

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(SHARED_REGISTRY)
