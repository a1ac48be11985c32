"""Every one of the five services answers /metrics with the Prometheus series operators need."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.images import make_zip, photo_bytes
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

GATEWAY = {
    "mattepipe_gateway_tasks",  # tasks by state
    "mattepipe_gateway_stage_seconds",  # stage latency histogram
    "mattepipe_gateway_queue_depth",
    "mattepipe_gateway_task_retries",
    "mattepipe_gateway_inflight",
}
BALANCER = {"mattepipe_queue_depth", "mattepipe_workers_healthy", "mattepipe_http_requests"}
WORKER = {"mattepipe_batch_size", "mattepipe_http_in_flight", "mattepipe_stage_seconds"}


def _families(url: str, headers: dict[str, str] | None = None) -> set[str]:
    r = httpx.get(f"{url}/metrics", timeout=10, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name for f in text_string_to_metric_families(r.text)}


def test_every_service_exposes_its_series(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/upload", content=make_zip({"a/one.jpg": photo_bytes("rocket.jpg", 96)}),
                     headers={"Content-Type": "application/zip"}).json()
    stack.wait_final(job["job_id"])
    s = stack.settings
    base = "http://127.0.0.1"
    assert _families(stack.url) >= GATEWAY
    for port in (s.matting_api_port, s.comparison_api_port):
        assert _families(f"{base}:{port}", stack.internal_headers) >= BALANCER
    for port in (s.matting_worker_port, s.matting_worker_port + 1, s.comparison_worker_port):
        assert _families(f"{base}:{port}", stack.internal_headers) >= WORKER
