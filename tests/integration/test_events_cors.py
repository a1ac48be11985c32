"""Live progress and browsers on other origins, on the real stack: a tenant follows its job
over `GET /jobs/{id}/events` from upload to the final event, and a page on a listed origin may
call the API (CORS preflight for a tus upload)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import make_zip, photo_bytes, studio_shot
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

KEY = "events-tenant-key"
ORIGIN = "https://shop.example"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp("events")
    with running_stack(data, api_keys=f"shop:{KEY}", cors_origins=ORIGIN) as s:
        yield s


def read_events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, object]]]:
    """Every (event, data) of the stream until it ends."""
    events: list[tuple[str, dict[str, object]]] = []
    name, data = "message", ""
    with client.stream("GET", f"/jobs/{job_id}/events", headers=AUTH, timeout=240) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                events.append((name, json.loads(data)))
                name, data = "message", ""
    return events


def test_a_job_is_followed_live_to_its_end(keyed_stack: Stack) -> None:
    disc, _ = studio_shot()
    members = {f"set/{i}.jpg": photo_bytes("chelsea.jpg") for i in range(3)}
    members["set/disc.png"] = disc
    with httpx.Client(base_url=keyed_stack.url, timeout=60) as c:
        r = c.post("/upload?model=identity", content=make_zip(members),
                   headers={**AUTH, "Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        events = read_events(c, job_id)
        assert events, "no event at all"
        name, last = events[-1]
        assert name == "end" and last["state"] == "completed", events[-1]
        assert last["completed"] == 4
        progress = [float(str(d["progress"])) for _, d in events]
        assert progress == sorted(progress) and progress[-1] == 100.0
        assert c.get(f"/status/{job_id}", headers=AUTH).json()["state"] == "completed"
        # another caller (no key) learns nothing about the job
        assert c.get(f"/jobs/{job_id}/events").status_code == 401


def test_a_page_on_a_listed_origin_may_upload(keyed_stack: Stack) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,tus-resumable,upload-length"}
    with httpx.Client(base_url=keyed_stack.url, timeout=30) as c:
        r = c.options("/files/", headers=preflight)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == ORIGIN
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "tus-resumable" in allowed and "upload-length" in allowed
        other = c.options("/files/", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
