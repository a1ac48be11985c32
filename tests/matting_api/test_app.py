"""`python -m matting_api` in front of `python -m matting_worker`, as the stack runs them."""

from __future__ import annotations

from pathlib import Path

import httpx
from PIL import Image

from comparison_api.app import make_config as comparison_config
from matting_api.app import make_config
from shared.settings import Settings
from tests.support.servers import INTERNAL_HEADERS, ProcessServer
from tests.support.waiting import wait_for


def test_configs_differ_only_where_they_should() -> None:
    s = Settings(worker_urls="http://a:1/, http://b:2", matting_api_port=18001,
                 comparison_api_port=18002, balancer_queue_limit=7)
    m, c = make_config(s), comparison_config(s)
    assert (m.route, m.port, m.service) == ("/matting", 18001, "matting_api")
    assert (c.route, c.port, c.service) == ("/compare", 18002, "comparison_api")
    assert m.worker_urls == c.worker_urls == ["http://a:1", "http://b:2"]
    assert m.queue_limit == 7


def test_entry_points_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "input/j/deep").mkdir(parents=True)
    Image.new("RGB", (40, 30), (250, 250, 250)).save(tmp_path / "input/j/deep/x.jpg")
    worker = ProcessServer("matting_worker", {"DATA_DIR": str(tmp_path)})
    api = ProcessServer("matting_api", {"DATA_DIR": str(tmp_path), "WORKER_URLS": worker.url})
    worker.env["MATTING_API_URL"] = api.url
    try:
        worker.start()
        api.start(ready=lambda r: r.json().get("healthy_workers") == 1)
        body = {"task_id": 3, "job_id": "j", "input": "input/j/deep/x.jpg",
                "output": "matting_output/j/deep/x.png"}
        r = httpx.post(api.url + "/matting", json=body, timeout=60, headers=INTERNAL_HEADERS)
        assert r.status_code == 200, r.text
        assert r.json()["worker_id"] == f"matting-{worker.port}"
        with Image.open(tmp_path / "matting_output/j/deep/x.png") as im:
            assert (im.mode, im.size) == ("RGBA", (40, 30))
        bad = httpx.post(api.url + "/matting", json={**body, "input": "../../etc/passwd"},
                         headers=INTERNAL_HEADERS)
        assert bad.status_code == 400 and bad.json()["retryable"] is False
        # The static worker also heartbeats: one entry, still "static".
        wait_for(lambda: httpx.get(api.url + "/workers", headers=INTERNAL_HEADERS)
                 .json()[0]["last_heartbeat"], what="heartbeat")
        listed = httpx.get(api.url + "/workers", headers=INTERNAL_HEADERS).json()
        assert len(listed) == 1 and listed[0]["source"] == "static"
        assert listed[0]["served"] == 1
        metrics = httpx.get(api.url + "/metrics", headers=INTERNAL_HEADERS).text
        assert "mattepipe_http_requests_total" in metrics
        for name in ("matting_api.log", "matting_api_debug.log", f"matting-{worker.port}.log"):
            assert (tmp_path / "logs" / name).is_file()
        assert "POST /matting 200" in (tmp_path / "logs/matting_api.log").read_text()
    finally:
        api.stop()
        worker.stop()
