"""DATA_DIR out of space, on a real small filesystem (a 40 MiB tmpfs) under the whole stack:
uploads answer 507, running tasks wait instead of failing for good, and once space is back
the job completes; the database (which lives on the same filesystem) stays intact."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import make_zip, noise_set, png_set
from tests.support.stack import Stack, db_check, running_stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MIN_FREE = 4 << 20


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for DATA_DIR")
    mnt = tmp_path_factory.mktemp("small_disk")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def dstack(small_disk: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    conf = tmp_path_factory.mktemp("conf") / "supervisord.conf"
    with running_stack(small_disk / "data", conf=conf, default_model="identity",
                       matting_workers=1, comparison_workers=1, min_free_disk=MIN_FREE) as s:
        yield s


def fill(where: Path, leave: int = 0) -> Path:
    """Write a ballast file until only `leave` bytes are free (0: until ENOSPC)."""
    ballast = where / "ballast.bin"
    block = b"\xa5" * (1 << 20)
    with ballast.open("wb", buffering=0) as f:
        try:
            while True:
                free = shutil.disk_usage(where).free
                if free <= leave:
                    break
                f.write(block[: min(len(block), free - leave)] if leave else block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return ballast


@contextlib.contextmanager
def disk_filled(where: Path, leave: int = 0) -> Iterator[Path]:
    ballast = fill(where, leave)
    try:
        yield ballast
    finally:
        ballast.unlink(missing_ok=True)


def upload(stack: Stack, members: dict[str, bytes]) -> tuple[int, dict[str, object]]:
    with stack.client() as c:
        r = c.post("/upload", content=make_zip(members),
                   headers={"Content-Type": "application/zip"})
    return r.status_code, r.json()


def test_upload_on_a_full_disk_is_507_and_leaves_nothing(dstack: Stack) -> None:
    members = png_set(6, side=64)
    with dstack.client() as c:
        before = c.get("/jobs").json()["total"]
    with disk_filled(dstack.data_dir, leave=MIN_FREE // 2):
        code, body = upload(dstack, members)
        assert code == 507, body
        assert "disk space" in str(body["detail"])
        with dstack.client() as c:
            assert c.get("/jobs").json()["total"] == before  # no half job
        assert list((dstack.data_dir / "input").iterdir()) == []
        with disk_filled(dstack.data_dir / "logs"):  # and with not one byte left
            code, body = upload(dstack, members)
            assert code == 507, body
            assert "disk space" in str(body["detail"])
    code, body = upload(dstack, members)
    assert code == 202, body
    st = dstack.wait_final(str(body["job_id"]))
    assert st["state"] == "completed" and st["completed"] == len(members)
    assert db_check(dstack.data_dir).integrity == "ok"


def worker_failures(stack: Stack) -> int:
    """Requests the workers answered with an error (their /info counters)."""
    ports = [stack.settings.matting_worker_port, stack.settings.comparison_worker_port]
    return sum(int(httpx.get(f"http://127.0.0.1:{p}/info", timeout=10,
                             headers=stack.internal_headers).json()["failed"])
               for p in ports)


def test_disk_fills_mid_job_then_frees(dstack: Stack) -> None:
    members = noise_set(40, side=192)  # ~110 KB in, ~150 KB out each
    failed_before = worker_failures(dstack)
    with contextlib.ExitStack() as fills:
        # most of the disk is taken before the upload (room left for the archive and its
        # extraction), the rest once the job runs: 64 KiB stay free, less than one cut-out
        fills.enter_context(disk_filled(dstack.data_dir / "logs", leave=MIN_FREE + (16 << 20)))
        code, body = upload(dstack, members)
        assert code == 202, body
        job_id = str(body["job_id"])

        def running() -> bool:
            with dstack.client() as c:
                return bool(c.get(f"/status/{job_id}").json()["state"] == "running")

        wait_for(running, 120, "the job running", interval=0.02)
        fills.enter_context(disk_filled(dstack.data_dir, leave=64 << 10))
        # the running tasks fail (507, retryable) on the full volume ...
        wait_for(lambda: worker_failures(dstack) > failed_before, 120, "a write refused")
        assert db_check(dstack.data_dir).integrity == "ok"
        with dstack.client() as c:
            st = c.get(f"/status/{job_id}").json()
        assert st["state"] == "running", st
        freed_at = time.time()
    # ... and wait, uncharged, until space is back: then every image completes once
    st = dstack.wait_final(job_id)
    done_s = time.time() - freed_at
    assert st["state"] == "completed" and st["completed"] == len(members), st
    with dstack.client() as c:
        rows = c.get(f"/jobs/{job_id}/tasks", params={"limit": 1000}).json()["tasks"]
    assert all(t["state"] == "completed" and t["retry_count"] == 0 for t in rows), rows
    check = db_check(dstack.data_dir)
    assert check.integrity == "ok" and check.stuck == []
    print(f"\ndisk full mid-job: {worker_failures(dstack) - failed_before} writes refused, "
          f"job finished {done_s:.1f}s after space was freed")
