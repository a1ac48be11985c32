"""One task's request id across the real stack (LOG_FORMAT=json): the gateway's stage call,
the matting balancer and the matting worker all log it; `/info` sees both stages healthy;
the gateway's debug log has resource lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.responses import GatewayInfo
from tests.support.images import make_zip, photo_bytes
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# the scheduler's line for a call that came back with a result (one task, or a batch)
_ANSWERED = re.compile(r" call: (ok|[1-9][0-9]* of [0-9]+ ok) in ")


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("data")
    with running_stack(data, log_format="json", resource_log_interval_s=0.5,
                       matting_workers=1) as s:
        yield s


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_one_request_id_across_gateway_balancer_and_worker(json_stack: Stack) -> None:
    with json_stack.client() as c:
        job = c.post("/upload", content=make_zip({"a/one.jpg": photo_bytes("rocket.jpg", 96)}),
                     headers={"Content-Type": "application/zip"}).json()
    job_id = job["job_id"]
    json_stack.wait_final(job_id)
    logs = json_stack.data_dir / "logs"
    # the call that answered: on a loaded machine an earlier try can meet a worker that is
    # not ready yet, and that try's id never reaches the worker
    calls = [d for d in _lines(logs / "gateway.log")
             if d.get("job_id") == job_id and d.get("stage") == "matting"
             and _ANSWERED.search(d.get("message", ""))]
    assert calls, "the gateway logged no answered matting call"
    rid = calls[0]["request_id"]
    assert rid.startswith(f"{job_id}:{calls[0]['task_id']}:matting:")
    worker = "matting-worker-1"  # the stack names its workers (`mattepipe.stack.config`)

    def everywhere() -> bool:
        return all(any(d.get("request_id") == rid for d in _lines(logs / f"{name}.log"))
                   for name in ("matting_api", worker))

    wait_for(everywhere, 30, "the request id in the balancer's and the worker's logs")
    for name in ("gateway", "matting_api", worker):
        mine = [d for d in _lines(logs / f"{name}.log") if d.get("request_id") == rid]
        assert all(d["service"] == name for d in mine)


def test_info_and_resource_lines(json_stack: Stack) -> None:
    with json_stack.client() as c:
        info = GatewayInfo.model_validate(c.get("/info").json())
    assert {s.stage: s.status for s in info.stages} == {"matting": "ok", "comparison": "ok"}
    logs = json_stack.data_dir / "logs"
    wait_for(lambda: any(d["message"].startswith("resources gateway")
                         for d in _lines(logs / "gateway_debug.log")), 30, "a resource line")
    line = next(d for d in _lines(logs / "gateway_debug.log")
                if d["message"].startswith("resources gateway"))
    assert line["fields"]["rss_bytes"] > 0 and "tasks" in line["fields"]["queues"]
