"""`GET /info` (behind the key, with its model), process figures in the gateway's /metrics, and
the request id every public answer carries."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.app import create_app
from shared.balancer.app import BalancerConfig, create_balancer_app
from shared.formats import IMAGE_SUFFIXES
from shared.logs import add_request_logging
from shared.responses import GatewayInfo
from tests.support.gateway import FAST, Gateway, image_tasks, make_settings, seed
from tests.support.servers import ThreadServer

Start = Callable[..., Gateway]


def test_info_names_limits_formats_and_stages(start_gateway: Start) -> None:
    cfg = BalancerConfig(service="matting_api", route="/matting", port=0, worker_urls=[],
                         queue_limit=4, queue_wait_s=0.1, token="t", resource_interval_s=0)
    with ThreadServer(create_balancer_app(cfg)) as balancer:
        # matting's balancer runs (with no worker); comparison's address answers nothing
        gw = start_gateway(balancer.url, comparison_api_url="http://127.0.0.1:9",
                           max_upload_size=12345, api_key="k" * 24)
        assert gw.client.get("/info").status_code == 401
        seed(gw.settings, [{"id": "j1", "state": "running", "total": 1}],
             [{**row, "next_attempt_at": 1e12}
              for row in image_tasks(gw.storage, "j1", ["a.jpg"])])
        r = gw.client.get("/info", headers={"Authorization": "Bearer " + "k" * 24})
    assert r.status_code == 200, r.text
    info = GatewayInfo.model_validate(r.json())
    assert info.version and info.uptime_s >= 0 and info.started_at > 0
    assert info.limits.max_upload_size == 12345 and info.default_model == "classical"
    assert set(info.image_formats) == IMAGE_SUFFIXES and "zip" in info.archive_formats
    stages = {s.stage: s for s in info.stages}
    assert stages["matting"].status == "degraded" and stages["matting"].workers == 0
    assert stages["matting"].service == "matting_api"
    assert stages["comparison"].status == "unreachable"
    assert stages["matting"].queued_tasks == 1 and info.tasks == {"pending": 1}
    assert "127.0.0.1" not in r.text  # no internal address


def test_gateway_metrics_show_process_figures(start_gateway: Start) -> None:
    text = start_gateway().client.get("/metrics").text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "python_info"):
        assert name in text


def test_public_answers_carry_a_request_id(data_dir: Path) -> None:
    app = create_app(make_settings(data_dir), **FAST)
    add_request_logging(app, "gateway")  # as `python -m gateway` does
    with ThreadServer(app) as srv:
        mine = httpx.get(srv.url + "/health", headers={"X-Request-ID": "client-42"})
        made = httpx.get(srv.url + "/jobs/nope/tasks")
    assert mine.headers["x-request-id"] == "client-42"
    assert made.status_code == 404 and re.fullmatch("[0-9a-f]{32}", made.headers["x-request-id"])
