"""LOG_FORMAT=json (one JSON object per line, with the request and task ids), request ids in
the request middleware, and the debug log's resource lines."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from shared import gpu
from shared.log_context import bind, valid_request_id
from shared.logs import DEBUG_LOGGER, add_request_logging, debug_log, setup_logging
from shared.resources import log_resources, resource_snapshot
from shared.settings import Settings
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_for

KEYS = {"time", "level", "logger", "service", "pid", "message"}


def _drop_our_handlers() -> None:
    for lg in (logging.getLogger(), logging.getLogger(DEBUG_LOGGER)):  # leave pytest's alone
        for h in [h for h in lg.handlers if getattr(h, "_mattepipe_handler", False)]:
            lg.removeHandler(h)
            h.close()


def _flush() -> None:
    for lg in (logging.getLogger(), logging.getLogger(DEBUG_LOGGER)):
        for h in lg.handlers:
            h.flush()


@pytest.fixture
def json_logs(tmp_path: Path) -> Iterator[Path]:
    setup_logging("svc", Settings(data_dir=tmp_path, log_format="json"))
    try:
        yield tmp_path / "logs"
    finally:
        _drop_our_handlers()


def _lines(path: Path) -> list[dict[str, Any]]:
    _flush()
    text = path.read_text(encoding="utf-8")
    # splitlines() also splits on \x85, \u2028, \u2029: none may appear raw in a line
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_parse_one_object_per_line(json_logs: Path) -> None:
    lg = logging.getLogger("mattepipe.test")
    lg.info("plain")
    with bind("rid-1", job_id="j1", task_id=7):
        lg.warning("evil name %s", "a\nb\r\x1b[31m\u2028c\x85d\u2029")
        try:
            raise ValueError("boom\nline two")
        except ValueError:
            lg.exception("it failed")
    debug_log.info("queue", extra={"fields": {"waiting": 3}})
    main = _lines(json_logs / "svc.log")
    assert len(main) == 3
    assert all(set(d) >= KEYS for d in main)
    plain, evil, failed = main
    assert plain["message"] == "plain" and plain["level"] == "INFO"
    assert plain["service"] == "svc" and plain["logger"] == "mattepipe.test"
    assert "request_id" not in plain and "task_id" not in plain
    assert evil["message"] == "evil name a\nb\r\x1b[31m\u2028c\x85d\u2029"  # kept, escaped
    assert (evil["request_id"], evil["job_id"], evil["task_id"]) == ("rid-1", "j1", 7)
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exc_info"]
    assert failed["request_id"] == "rid-1"
    debug = _lines(json_logs / "svc_debug.log")
    assert debug[0]["fields"] == {"waiting": 3} and debug[0]["message"] == "queue"


def test_text_lines_carry_the_request_id(tmp_path: Path) -> None:
    setup_logging("svc", Settings(data_dir=tmp_path))
    try:
        with bind("rid-2", task_id=9):
            logging.getLogger("mattepipe.test").info("hello")
        logging.getLogger("mattepipe.test").info("bare")
        _flush()
    finally:
        _drop_our_handlers()
    lines = (tmp_path / "logs/svc.log").read_text().splitlines()
    assert lines[0].endswith("hello [request_id=rid-2 task_id=9]")
    assert lines[1].endswith("bare")


def test_bind_nests_and_restores() -> None:
    from shared.log_context import current_fields

    with bind("a", job_id="j"):
        with bind(task_id=1):
            assert current_fields() == {"request_id": "a", "job_id": "j", "task_id": 1}
        assert current_fields() == {"request_id": "a", "job_id": "j"}
    assert current_fields() == {}


@pytest.mark.parametrize(("value", "ok"), [
    ("abc-123:4:matting:ff", True), ("x" * 128, True), ("x" * 129, False), ("", False),
    ("a b", False), ("a\nb", False), ("é", False), ("a\x7f", False),
])
def test_request_id_validation(value: str, ok: bool) -> None:
    assert (valid_request_id(value) == value) is ok


def _app() -> Starlette:
    async def hello(request: Request) -> PlainTextResponse:
        logging.getLogger("mattepipe.test").info("inside the handler")
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/hello", hello)])
    add_request_logging(app, "svc")
    return app


def test_middleware_takes_makes_and_returns_request_ids(json_logs: Path) -> None:
    with ThreadServer(_app()) as srv:
        given = httpx.get(srv.url + "/hello", headers={"X-Request-ID": "job:1:matting:a"})
        made = httpx.get(srv.url + "/hello")
        too_long = httpx.get(srv.url + "/hello", headers={"X-Request-ID": "y" * 129})
        spaced = httpx.get(srv.url + "/hello", headers={"X-Request-ID": "a b"})
        missing = httpx.get(srv.url + "/nowhere", headers={"X-Request-ID": "lost-1"})
    assert given.headers["x-request-id"] == "job:1:matting:a"
    for r in (made, too_long, spaced):  # replaced by a fresh uuid
        assert re.fullmatch("[0-9a-f]{32}", r.headers["x-request-id"]), r.headers
    assert len({made.headers["x-request-id"], too_long.headers["x-request-id"]}) == 2
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "lost-1"
    lines = _lines(json_logs / "svc.log")
    mine = [d for d in lines if d.get("request_id") == "job:1:matting:a"]
    # the handler's own line and the request line both carry it
    assert {d["logger"] for d in mine} == {"mattepipe.test", "mattepipe.requests"}
    assert any(d.get("request_id") == "lost-1" and "404" in d["message"] for d in lines)
    assert not any("y" * 129 in json.dumps(d) for d in lines)


def test_resource_line_lands_in_the_debug_log(json_logs: Path) -> None:
    fields = asyncio.run(log_resources("svc", lambda: {"waiting": 2}))
    assert fields["rss_bytes"] > 0 and fields["open_fds"] > 0 and fields["cpu_seconds"] >= 0
    assert fields["queues"] == {"waiting": 2}
    line = _lines(json_logs / "svc_debug.log")[-1]
    assert line["message"].startswith("resources svc: rss_bytes=")
    assert line["fields"]["queues"] == {"waiting": 2}


def test_no_nvml_means_no_gpu_field_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # pynvml absent (an import that fails): the field is left out, nothing raises
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu, "_state", {"nvml": None, "tried": False})
    assert gpu.process_gpu_memory() == {}
    assert "gpu_memory_bytes" not in resource_snapshot()
    assert gpu._state["tried"] is True  # and it is not tried again on every line


async def test_a_balancer_logs_resource_lines_on_its_interval(json_logs: Path) -> None:
    from shared.balancer.app import BalancerConfig, create_balancer_app

    cfg = BalancerConfig(service="matting_api", route="/matting", port=0, worker_urls=[],
                         queue_limit=4, queue_wait_s=0.1, token="t", resource_interval_s=0.05)
    with ThreadServer(create_balancer_app(cfg)):

        def two_lines() -> bool:
            return sum(d["message"].startswith("resources matting_api")
                       for d in _lines(json_logs / "svc_debug.log")) >= 2

        await asyncio.to_thread(wait_for, two_lines, 30, "two resource lines")
    line = next(d for d in _lines(json_logs / "svc_debug.log")
                if d["message"].startswith("resources"))
    assert line["fields"]["queues"] == {"waiting": 0, "in_flight": {}}
