"""`GET /jobs/{id}/events` on the real gateway under uvicorn, with a real stage server and a
real SQLite file: a job's progress arrives as `status` events and ends with `end`; another
tenant's job is the very 404 of an unknown one; MAX_EVENT_STREAMS holds and a disconnect gives
the slot back; `mattepipe wait` follows the stream instead of polling, and polls when there is
none."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway.api import events as events_api
from gateway.app import create_app
from mattepipe.cli.main import app as cli_app
from mattepipe.client.sse import HEARTBEAT, Event, parse_events
from shared.responses import JobStatus
from tests.gateway.api.test_tenants import (
    ADMIN,
    KEY_A,
    KEY_B,
    KEYS,
    auth,
    same_as_unknown,
    upload,
    zip_of_images,
)
from tests.support.gateway import FAST, Gateway, StageServer, make_settings
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
runner = CliRunner()


@contextmanager
def stream(gw: Gateway, job_id: str, key: str | None = None) -> Iterator[httpx.Response]:
    headers = auth(key) if key else {}
    with gw.client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as r:
        yield r


def read_all(r: httpx.Response) -> list[Event]:
    assert r.status_code == 200, r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    return [e for e in parse_events(r.iter_lines()) if e.name != HEARTBEAT]


def started(gw: Gateway, names: list[str], key: str | None = None) -> str:
    headers = auth(key) if key else {}
    r = gw.client.post("/upload?filename=set.zip", content=zip_of_images(names),
                       headers={"Content-Type": "application/zip", **headers})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def test_a_job_streams_its_progress_and_ends_with_end(start_gateway: Start,
                                                      stage_server: StageServer) -> None:
    # One request at a time, each a little slow: the job passes through several states.
    n = 6
    stage_server.plan = {"matting": ["slow:0.2"] * n, "compare": ["slow:0.2"] * n}
    gw = start_gateway(stage_server.url, matting_concurrency=1, comparison_concurrency=1)
    job_id = started(gw, [f"i{k}.jpg" for k in range(n)])
    with stream(gw, job_id) as r:
        got = read_all(r)  # returns only because the server closes the stream after `end`
    names = [e.name for e in got]
    assert names[-1] == "end" and names.count("end") == 1
    assert names[:-1] == ["status"] * (len(got) - 1) and len(got) >= 3, names
    statuses = [JobStatus.model_validate_json(e.data) for e in got]
    progress = [s.progress for s in statuses]
    assert progress == sorted(progress) and progress[0] < 100.0 == progress[-1], progress
    assert len(set(progress)) >= 2
    final = statuses[-1]
    assert final.state == "completed" and final.completed == n
    # the same object as /status (only the clock-driven throughput may differ)
    polled = gw.client.get(f"/status/{job_id}").json()
    sent = json.loads(got[-1].data)
    assert sent.keys() == polled.keys()
    assert {k: v for k, v in sent.items() if k != "throughput_per_s"} == \
        {k: v for k, v in polled.items() if k != "throughput_per_s"}
    # consecutive events differ in more than the clock
    for a, b in itertools.pairwise(statuses):
        assert a.model_dump(exclude={"throughput_per_s", "eta_s"}) != \
            b.model_dump(exclude={"throughput_per_s", "eta_s"})


def test_a_finished_job_answers_end_at_once(start_gateway: Start,
                                            stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    job_id = started(gw, ["a.jpg"])
    wait_for(lambda: gw.client.get(f"/status/{job_id}").json()["state"] == "completed")
    with stream(gw, job_id) as r:
        got = read_all(r)
    assert [e.name for e in got] == ["end"]
    assert json.loads(got[0].data)["state"] == "completed"


def test_a_cancelled_job_ends_its_stream_at_once(start_gateway: Start,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel tells the job's streams (`Database.note_jobs_ended`), as the scheduler's
    close does: `end` leaves at once, not after the (two-minute) read interval. The cancel
    comes during the job's ingest, which it may cancel mid-write (`test_cancelled_writes`)."""
    interval = 120.0
    monkeypatch.setattr(events_api, "EVENTS_MIN_INTERVAL_S", interval)
    gw = start_gateway()  # no stage answers: the job stays running
    job_id = started(gw, ["a.jpg", "b.jpg"])
    with stream(gw, job_id) as r:
        assert r.status_code == 200
        lines = parse_events(r.iter_lines())
        assert next(e for e in lines if e.name).name == "status"
        t0 = time.monotonic()
        assert gw.client.delete(f"/jobs/{job_id}").status_code == 200
        rest = [e for e in lines if e.name]
    assert time.monotonic() - t0 < interval / 2
    assert [e.name for e in rest][-1] == "end"
    assert json.loads(rest[-1].data)["state"] == "cancelled"


def test_unknown_and_other_tenants_jobs_are_the_same_404(start_gateway: Start,
                                                         stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, **KEYS)
    r = upload(gw, KEY_B, ["b1.jpg"])
    assert r.status_code == 202
    b = r.json()["job_id"]
    got = same_as_unknown(gw, "GET", "/jobs/{id}/events", b, KEY_A)
    assert "detail" in got.json()
    assert gw.client.get(f"/jobs/{b}/events").status_code == 401  # no key at all
    for key in (KEY_B, ADMIN):  # its owner and the admin follow it to the end
        with stream(gw, b, key) as s:
            assert read_all(s)[-1].name == "end"


def test_the_stream_limit_holds_and_a_disconnect_frees_the_slot(start_gateway: Start) -> None:
    gw = start_gateway(max_event_streams=1)
    job_id = started(gw, ["a.jpg"])
    with stream(gw, job_id) as first:
        assert first.status_code == 200
        lines = parse_events(first.iter_lines())  # kept: dropping it would close the stream
        assert next(e for e in lines if e.name).name == "status"
        refused = gw.client.get(f"/jobs/{job_id}/events")
        assert refused.status_code == 429
        assert "MAX_EVENT_STREAMS" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0
    # the client went away: its slot comes back (once the server has noticed)

    def reopened() -> bool:
        with stream(gw, job_id) as again:
            return again.status_code == 200

    wait_for(reopened, what="a stream after the first one disconnected")


def test_no_streams_when_the_limit_is_zero(start_gateway: Start) -> None:
    gw = start_gateway(max_event_streams=0)
    job_id = started(gw, ["a.jpg"])
    r = gw.client.get(f"/jobs/{job_id}/events")
    assert r.status_code == 429 and "detail" in r.json()


def test_a_quiet_stream_sends_heartbeats(start_gateway: Start,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_api, "EVENTS_HEARTBEAT_S", 0.2)
    gw = start_gateway()  # no stage answers: nothing changes after the first events
    job_id = started(gw, ["a.jpg"])
    with stream(gw, job_id) as r:
        assert any(line.startswith(":") for line in r.iter_lines())  # a comment comes


def test_the_end_is_sent_as_the_job_closes_not_an_interval_later(
        start_gateway: Start, stage_server: StageServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream reads its job at most once per EVENTS_MIN_INTERVAL_S, but the job's close
    (`Database.note_job_ended`) cuts that wait short: with the interval at two minutes the
    `end` still comes as soon as the job is done (issue 14: a client on the stream waited up
    to an interval after its job)."""
    interval = 120.0
    monkeypatch.setattr(events_api, "EVENTS_MIN_INTERVAL_S", interval)
    stage_server.plan = {"matting": ["slow:0.5"], "compare": ["slow:0.5"]}
    gw = start_gateway(stage_server.url)
    job_id = started(gw, ["a.jpg"])
    t0 = time.monotonic()
    with stream(gw, job_id) as r:
        got = read_all(r)
    took = time.monotonic() - t0
    assert [e.name for e in got] == ["status", "end"], [e.name for e in got]
    assert json.loads(got[0].data)["state"] != "completed"
    assert json.loads(got[-1].data)["state"] == "completed"
    assert took < interval / 2, took


def test_every_stream_of_the_job_gets_its_end_at_once(
        start_gateway: Start, stage_server: StageServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two streams of one job share its end signal (`Database.job_end_signal`): both end as
    the job closes, neither waits out the (two-minute) read interval."""
    interval = 120.0
    monkeypatch.setattr(events_api, "EVENTS_MIN_INTERVAL_S", interval)
    stage_server.plan = {"matting": ["slow:0.5"], "compare": ["slow:0.5"]}
    gw = start_gateway(stage_server.url)
    job_id = started(gw, ["a.jpg"])

    def follow() -> list[str]:
        with httpx.Client(base_url=gw.url, timeout=30) as c, \
                c.stream("GET", f"/jobs/{job_id}/events") as r:
            return [e.name for e in read_all(r)]

    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda _: follow(), range(2)))
    assert all(names[-1] == "end" for names in got), got
    assert time.monotonic() - t0 < interval / 2


# --- the CLI against the real gateway ----------------------------------------------------------

class PathLog:
    """ASGI wrapper that records every request's path (lifespan passes through)."""

    def __init__(self, app: Any) -> None:
        self.app, self.paths = app, list[str]()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def logged_gateway(data_dir: Path, stage_server: StageServer) -> Iterator[
        Callable[..., tuple[Gateway, PathLog]]]:
    servers: list[ThreadServer] = []

    def start(**kw: Any) -> tuple[Gateway, PathLog]:
        settings = make_settings(data_dir, stage_server.url, **kw)
        logged = PathLog(create_app(settings, **FAST))
        srv = ThreadServer(logged).__enter__()
        servers.append(srv)
        from shared.storage import Storage
        return Gateway(srv.url, settings, Storage(data_dir),
                       httpx.Client(base_url=srv.url, timeout=30)), logged

    yield start
    for srv in servers:
        srv.__exit__()


@pytest.mark.parametrize("streams", [100, 0], ids=["events", "no-events"])
def test_cli_wait_follows_the_stream_and_polls_without_one(
        logged_gateway: Callable[..., tuple[Gateway, PathLog]],
        stage_server: StageServer, streams: int) -> None:
    n = 4
    stage_server.plan = {"matting": ["slow:0.2"] * n, "compare": ["slow:0.2"] * n}
    gw, log = logged_gateway(max_event_streams=streams, matting_concurrency=1,
                             comparison_concurrency=1)
    job_id = started(gw, [f"i{k}.jpg" for k in range(n)])
    result = runner.invoke(cli_app, ["wait", job_id],
                           env={"COLUMNS": "200", "MATTEPIPE_SERVER": gw.url})
    assert result.exit_code == 0, result.output
    assert f"job {job_id}: completed" in result.output
    polls = log.paths.count(f"/status/{job_id}")
    assert log.paths.count(f"/jobs/{job_id}/events") >= 1
    if streams:
        assert polls == 0, log.paths  # the stream told it all
    else:
        assert polls >= 2, log.paths  # refused (429): it polled, as before


def test_cli_wait_on_an_unknown_job_exits_as_before(
        logged_gateway: Callable[..., tuple[Gateway, PathLog]]) -> None:
    gw, log = logged_gateway()
    result = runner.invoke(cli_app, ["wait", "nope"],
                           env={"COLUMNS": "200", "MATTEPIPE_SERVER": gw.url})
    assert result.exit_code == 4, result.output
    assert "unknown job" in result.output
    assert log.paths == ["/jobs/nope/events", "/status/nope"]
