"""Under load: five clients upload at once while fifty pollers hit `/status`.

Every job must complete and every poll must be answered; how fast `/status` answers under
this load is measured by `make bench` (bench/status_load.py), not asserted here. The
`identity` engine keeps the images cheap, so what is exercised is the pipeline itself.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from PIL import Image

from tests.support.images import make_zip
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.integration

CLIENTS = 5
POLLERS = 50
IMAGES = 8
FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("load") / "data"
    data.mkdir()
    # Five jobs at once from one (anonymous) caller: above the default concurrent quota of 4.
    with running_stack(data, matting_workers=1, max_concurrent_jobs=CLIENTS) as s:
        yield s


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (seed % 256, (seed * 7) % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Polls:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    per_poller: list[int] = field(default_factory=lambda: [0] * POLLERS)

    def ok(self, i: int) -> None:
        with self.lock:
            self.answered += 1
            self.per_poller[i] += 1

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def test_five_uploads_and_fifty_pollers(stack: Stack) -> None:
    jobs: list[str] = []
    jobs_lock = threading.Lock()
    stop = threading.Event()
    polls = Polls()

    def client(n: int) -> str:
        members = {f"c{n}/img{i}.png": png_bytes(n * 100 + i) for i in range(IMAGES)}
        with httpx.Client(base_url=stack.url, timeout=120) as c:
            r = c.post("/upload", content=make_zip(members), params={"model": "identity"},
                       headers={"Content-Type": "application/zip"})  # fmt: skip
        assert r.status_code == 202, r.text
        job_id = str(r.json()["job_id"])
        with jobs_lock:
            jobs.append(job_id)
        return job_id

    def poller(i: int) -> None:
        with httpx.Client(base_url=stack.url, timeout=60) as c:
            k = 0
            while not stop.is_set():
                with jobs_lock:
                    known = list(jobs)
                path = f"/status/{known[k % len(known)]}" if known else "/jobs?limit=5"
                k += 1
                try:
                    r = c.get(path)
                except httpx.HTTPError as exc:
                    polls.error(f"{path}: {exc!r}")
                else:
                    if r.status_code == 200 and ("state" in r.json() or "jobs" in r.json()):
                        polls.ok(i)
                    else:
                        polls.error(f"{path}: {r.status_code} {r.text[:200]}")
                time.sleep(0.05)

    with ThreadPoolExecutor(CLIENTS + POLLERS) as pool:
        poll_futures = [pool.submit(poller, i) for i in range(POLLERS)]
        try:
            ids = list(pool.map(client, range(CLIENTS)))
            finals = wait_all(stack, ids)
        finally:
            stop.set()
            for f in poll_futures:
                f.result(timeout=120)

    assert len(set(ids)) == CLIENTS
    for job_id, st in finals.items():
        assert st["state"] == "completed", (job_id, st)
        assert st["total"] == IMAGES and st["completed"] == IMAGES, st
    assert polls.errors == [], polls.errors[:5]
    assert min(polls.per_poller) >= 1, polls.per_poller
    assert polls.answered >= POLLERS


def wait_all(stack: Stack, ids: list[str]) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + DEADLINE_S
    finals: dict[str, dict[str, object]] = {}
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        while len(finals) < len(ids):
            for job_id in ids:
                if job_id not in finals:
                    st = c.get(f"/status/{job_id}").json()
                    if st["state"] in FINAL:
                        finals[job_id] = st
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs not finished in {DEADLINE_S}s: {finals}")
            time.sleep(0.25)
    return finals
