"""One stage call's X-Request-ID, sent by the gateway's `call_stage`, through a real balancer
to a real worker (both as processes, LOG_FORMAT=json): in both services' log lines and back in
the answer's header; their /metrics show process figures, their debug logs resource lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from gateway.pipeline.stage_calls import call_stage, request_id_for
from shared.schemas import ForwardedRequest
from shared.stages import Stage
from shared.storage import Storage
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ProcessServer
from tests.support.waiting import wait_for


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_request_id_crosses_balancer_and_worker(tmp_path: Path) -> None:
    (tmp_path / "input/j1").mkdir(parents=True)
    Image.new("RGB", (40, 30), (250, 250, 250)).save(tmp_path / "input/j1/x.jpg")
    env = {"DATA_DIR": str(tmp_path), "LOG_FORMAT": "json", "RESOURCE_LOG_INTERVAL_S": "0.2"}
    worker = ProcessServer("matting_worker", env)
    api = ProcessServer("matting_api", {**env, "WORKER_URLS": worker.url})
    worker.env["MATTING_API_URL"] = api.url
    try:
        worker.start()
        api.start(ready=lambda r: r.json().get("healthy_workers") == 1)
        rid = request_id_for(Stage.MATTING, "j1", 5)
        req = ForwardedRequest(task_id=5, job_id="j1", input="input/j1/x.jpg",
                               output="matting_output/j1/x.png")

        async def call() -> Any:
            async with httpx.AsyncClient(trust_env=False) as client:
                return await call_stage(client, api.url + "/matting", Stage.MATTING, req,
                                        Storage(tmp_path), 60, INTERNAL_TOKEN, rid)

        out = asyncio.run(call())
        assert out.result is not None, out.error
        # the header comes back through the balancer (the worker's and the balancer's)
        again = httpx.post(api.url + "/matting", json=req.model_dump(), timeout=60,
                           headers={**INTERNAL_HEADERS, "X-Request-ID": "direct-1"})
        assert again.status_code == 200 and again.headers["x-request-id"] == "direct-1"
        direct = httpx.post(worker.url + "/matting", json=req.model_dump(), timeout=60,
                            headers={**INTERNAL_HEADERS, "X-Request-ID": "direct-2"})
        assert direct.headers["x-request-id"] == "direct-2"

        logs = tmp_path / "logs"
        wid = f"matting-{worker.port}"

        def logged() -> bool:
            return all(any(d.get("request_id") == rid for d in _json_lines(logs / f"{n}.log"))
                       for n in ("matting_api", wid))

        wait_for(logged, 30, "the request id in both logs")
        for name in ("matting_api", wid):
            mine = [d for d in _json_lines(logs / f"{name}.log") if d.get("request_id") == rid]
            assert any("POST /matting 200" in d["message"] for d in mine), mine
            assert all(d["service"] == name for d in mine)
        # the worker's debug line for the batch carries the task and the request id
        wdebug = [d for d in _json_lines(logs / f"{wid}_debug.log") if d.get("request_id") == rid]
        assert any(d.get("task_id") == 5 and d.get("job_id") == "j1" for d in wdebug), wdebug

        for srv in (api, worker):
            text = httpx.get(srv.url + "/metrics", headers=INTERNAL_HEADERS).text
            assert "process_resident_memory_bytes" in text
            assert "process_cpu_seconds_total" in text and "process_open_fds" in text

        def resource_lines() -> bool:
            return all(any(d["message"].startswith("resources")
                           for d in _json_lines(logs / f"{n}_debug.log"))
                       for n in ("matting_api", wid))

        wait_for(resource_lines, 30, "resource lines in both debug logs")
        api_res = next(d for d in _json_lines(logs / "matting_api_debug.log")
                       if d["message"].startswith("resources"))
        assert api_res["fields"]["rss_bytes"] > 0 and "waiting" in api_res["fields"]["queues"]
        w_res = [d for d in _json_lines(logs / f"{wid}_debug.log")
                 if d["message"].startswith("resources")]
        assert "batchers" in w_res[-1]["fields"]["queues"]
    finally:
        api.stop()
        worker.stop()
