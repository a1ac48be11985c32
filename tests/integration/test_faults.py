"""Crashes mid-job on the real stack: a worker, the gateway, a balancer, each SIGKILLed while a
job runs. Each time the job must still finish with every image done exactly once, the database
must pass `PRAGMA integrity_check`, and no task may sit in a dispatched state past its lease.

"Mid-job" is a condition, not a delay: each test polls until the process it kills has work in
hand (a worker's `in_flight`, the job's counts) and only then kills it.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import make_zip, noise_set, png_set
from tests.support.processes import living_children
from tests.support.stack import Stack, db_check, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

IMAGES = 60
SIDE = 256  # noise at this size keeps a worker busy for tens of ms a batch: polls see it
DEAD_STATES = ("permanently_failed", "rejected")


@pytest.fixture(scope="module")
def fstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the crash tests: each test ends only once everything it killed is back
    and healthy, so the next one starts from a whole stack."""
    with running_stack(
        tmp_path_factory.mktemp("faults"),
        default_model="identity",
        matting_workers=2,
        comparison_workers=2,
        max_batch_size=4,
        # batched stage calls, but few enough in flight that a 60-image job is caught
        # "half done, with calls in flight and tasks still pending" by the polls below
        stage_batch_size=4,
        matting_concurrency=16,
        comparison_concurrency=8,
        # the 60-image zip's ingest must run in a child (INGEST_CHILD_MIN_MEMBERS is 256)
        ingest_child_min_members=0,
    ) as s:
        yield s


def start_job(stack: Stack, members: dict[str, bytes]) -> str:
    with stack.client() as c:
        r = c.post("/upload", content=make_zip(members),
                   headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def status(stack: Stack, job_id: str) -> dict[str, Any]:
    try:
        with stack.client() as c:
            return dict(c.get(f"/status/{job_id}").json())
    except httpx.TransportError:
        return {}


def progressed(counts: dict[str, int]) -> int:
    """Images that got through matting (some of the job is done, some is not)."""
    return sum(counts.get(s, 0) for s in ("matting_done", "dispatched_comparison", "completed"))


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    try:
        return httpx.get(url, timeout=5, headers=headers).json()
    except (httpx.TransportError, ValueError):
        return None


def task_rows(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    with stack.client() as c:
        r = c.get(f"/jobs/{job_id}/tasks", params={"limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["tasks"] if isinstance(body, dict) else body
    return list(rows)


def assert_each_once(stack: Stack, job_id: str, members: dict[str, bytes]) -> None:
    """The job completed, and its download holds exactly one cut-out and one sheet per image."""
    st = stack.wait_final(job_id)
    if st["state"] != "completed":  # say which tasks failed and why
        bad = [(t["path"], t["state"], t["failed_stage"], t["error"], t["retry_count"])
               for t in task_rows(stack, job_id) if t["state"] != "completed"]
        raise AssertionError(f"job {st['state']}, error {st.get('error')!r}: {bad}")
    assert st["total"] == len(members) and st["completed"] == len(members), st
    rows = task_rows(stack, job_id)
    assert len(rows) == len(members)
    assert sorted(t["path"] for t in rows) == sorted(members)
    assert {t["state"] for t in rows} == {"completed"}
    with stack.client() as c:
        r = c.get(f"/download/{job_id}")
    assert r.status_code == 200, r.text
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = zf.namelist()
    assert len(names) == len(set(names)), "a name appears twice in the download"
    cutouts = sorted(n for n in names if n.startswith("matting_output/"))
    sheets = sorted(n for n in names if n.startswith("final_results/"))
    stems = sorted(p.removesuffix(".png") for p in members)
    assert cutouts == [f"matting_output/{s}.png" for s in stems]
    assert sheets == [f"final_results/{s}_compare.jpg" for s in stems]
    report = json.loads(zf.read("report.json"))
    assert report["summary"]["items"] == len(members)
    assert report["summary"]["completed"] == len(members)
    assert sorted(i["path"] for i in report["items"]) == sorted(members)


def assert_db_sound(stack: Stack) -> None:
    check = db_check(stack.data_dir)
    assert check.integrity == "ok"
    assert check.stuck == []


def worker_url(stack: Stack, kind: str, n: int) -> str:
    first = (stack.settings.matting_worker_port if kind == "matting"
             else stack.settings.comparison_worker_port)
    return f"http://127.0.0.1:{first + n - 1}"


def api_url(stack: Stack, kind: str) -> str:
    port = (stack.settings.matting_api_port if kind == "matting"
            else stack.settings.comparison_api_port)
    return f"http://127.0.0.1:{port}"


def pool_entry(stack: Stack, kind: str, url: str) -> dict[str, Any]:
    workers = get_json(api_url(stack, kind) + "/workers", stack.internal_headers) or []
    return next((w for w in workers if w["url"] == url), {})


@pytest.mark.parametrize("kind", ["matting", "comparison"])
def test_worker_killed_mid_job(fstack: Stack, kind: str) -> None:
    members = noise_set(IMAGES, SIDE)
    url = worker_url(fstack, kind, 1)
    program = f"{kind}-worker-1"
    job_id = start_job(fstack, members)

    headers = fstack.internal_headers
    wait_for(lambda: (get_json(url + "/info", headers) or {}).get("in_flight", 0) > 0, 120,
             f"{program} busy with the job", interval=0.02)
    killed_at = time.time()
    old_pid = fstack.kill(program)

    # the balancer stops sending to it: it is marked unhealthy, from a failed call or probe
    wait_for(lambda: pool_entry(fstack, kind, url).get("healthy") is False, 60,
             f"{program} marked unhealthy")
    # its in-flight tasks went to the other worker: nothing failed, nothing was retried
    assert_each_once(fstack, job_id, members)
    recovered_s = time.time() - killed_at
    assert all(t["retry_count"] == 0 for t in task_rows(fstack, job_id))

    # Supervisor restarted it and it rejoined by heartbeat
    fstack.wait_restarted(program, old_pid, url + "/health")
    entry = wait_for(lambda: (e := pool_entry(fstack, kind, url)).get("healthy")
                     and (e.get("last_heartbeat") or 0) > killed_at and e, 60,
                     f"{program} back by heartbeat")
    assert entry["healthy"] is True

    # and it takes work again
    more = png_set(12, side=80)
    again = start_job(fstack, more)
    assert_each_once(fstack, again, more)
    assert (get_json(url + "/info", headers) or {}).get("served", 0) > 0
    assert_db_sound(fstack)
    print(f"\n{program} killed: job finished {recovered_s:.1f}s after the kill")


class SlowBody:
    """A request body that sends a few MiB, then trickles until told to stop (or cut)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        head = b"PK\x03\x04" + bytes(range(256)) * (5 * 4096)  # > one 4 MiB flush to disk
        self.sent += len(head)
        yield head
        while not self.stop.wait(0.05):
            self.sent += 1024
            yield b"\0" * 1024


def test_gateway_killed_mid_job_and_mid_upload(fstack: Stack) -> None:
    members = noise_set(IMAGES, SIDE)
    body = SlowBody()
    answers: list[object] = []

    def upload() -> None:
        try:
            with httpx.Client(base_url=fstack.url, timeout=120) as c:
                answers.append(c.post("/upload", content=body,
                                      headers={"Content-Type": "application/zip"}))
        except httpx.HTTPError as exc:
            answers.append(exc)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    try:
        job_id = start_job(fstack, members)

        def cut_upload() -> str | None:
            with fstack.client() as c:
                jobs = c.get("/jobs").json()["jobs"]
            ids = [j["job_id"] for j in jobs if j["state"] == "uploading"]
            return ids[0] if ids and (fstack.data_dir / "input" / ids[0]).is_dir() \
                and body.sent > 4 << 20 else None

        cut_id = wait_for(cut_upload, 60, "the slow upload under way")

        def mid_job() -> bool:
            st = status(fstack, job_id)
            counts = st.get("counts", {})
            busy = counts.get("dispatched_matting", 0) + counts.get("dispatched_comparison", 0)
            return bool(busy and counts.get("pending", 0) and progressed(counts))

        wait_for(mid_job, 120, "job half done with tasks in flight", interval=0.02)
        killed_at = time.time()
        old_pid = fstack.kill("gateway")
        uploader.join(60)
    finally:
        body.stop.set()
    assert answers and not isinstance(answers[0], httpx.Response), answers

    fstack.wait_restarted("gateway", old_pid, fstack.url + "/health")
    back_s = time.time() - killed_at
    assert_each_once(fstack, job_id, members)
    done_s = time.time() - killed_at
    # the restart handed the dead process's leases back without charging the images
    assert all(t["retry_count"] == 0 for t in task_rows(fstack, job_id))

    # the upload cut by the kill left nothing behind: no job row, no folder
    with fstack.client() as c:
        jobs = c.get("/jobs").json()["jobs"]
        assert not [j for j in jobs if j["state"] == "uploading"]
        assert c.get(f"/status/{cut_id}").status_code == 404
    assert not (fstack.data_dir / "input" / cut_id).exists()
    assert_db_sound(fstack)
    print(f"\ngateway killed: back in {back_s:.1f}s, job finished {done_s:.1f}s after the kill")


def _ingest_children(parent: int) -> list[int]:
    """`gateway.intake.ingest_process` children of `parent`, alive (not zombies)."""
    return living_children(parent, "gateway.intake.ingest_process")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_gateway_killed_mid_ingest_leaves_no_ingest_process(fstack: Stack) -> None:
    # 60 noise PNGs of 256 px: a ~12 MB zip, past INGEST_CHILD_MIN_BYTES (1 MiB) (and the
    # fixture's INGEST_CHILD_MIN_MEMBERS 0), so its ingest runs in a child of the gateway
    # (gateway.intake.ingest_process)
    members = noise_set(IMAGES, SIDE)
    gateway = fstack.pid("gateway")
    job_id = start_job(fstack, members)
    children = wait_for(lambda: _ingest_children(gateway), 60, "the ingest child",
                        interval=0.02)
    old_pid = fstack.kill("gateway")
    assert old_pid == gateway
    # the kernel kills the child with its gateway (PR_SET_PDEATHSIG): no second writer is
    # left on the database when the new gateway starts
    wait_for(lambda: not any(_alive(c) for c in children), 30, "the ingest child gone")
    fstack.wait_restarted("gateway", old_pid, fstack.url + "/health")
    assert_each_once(fstack, job_id, members)  # the restart redid the ingest, once
    assert_db_sound(fstack)


@pytest.mark.parametrize("kind", ["matting"])
def test_balancer_killed_mid_job(fstack: Stack, kind: str) -> None:
    members = noise_set(IMAGES, SIDE)
    program = f"{kind}-api"
    job_id = start_job(fstack, members)

    def mid_job() -> bool:
        counts = status(fstack, job_id).get("counts", {})
        return bool(counts.get(f"dispatched_{kind}", 0) and progressed(counts))

    wait_for(mid_job, 120, f"job half done with {kind} calls in flight", interval=0.02)
    killed_at = time.time()
    old_pid = fstack.kill(program)
    fstack.wait_restarted(program, old_pid, api_url(fstack, kind) + "/health")
    back_s = time.time() - killed_at
    assert_each_once(fstack, job_id, members)
    done_s = time.time() - killed_at
    # a refused connection is not the image's fault; a call cut mid-way counts once at most
    rows = task_rows(fstack, job_id)
    assert all(t["retry_count"] <= 1 for t in rows), [t for t in rows if t["retry_count"] > 1]
    assert_db_sound(fstack)
    print(f"\n{program} killed: back in {back_s:.1f}s, job finished {done_s:.1f}s after the kill")
