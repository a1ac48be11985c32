"""Ingest in a child process (`gateway.intake.ingest_process`): a big upload is unpacked by a
real child of the gateway, on the same SQLite file; the child never outlives the gateway
(SIGTERM, SIGKILL), dies with a cancelled ingest, and a child that dies is redone as a
gateway crash would be.

To hold a child in the middle of its ingest, a test takes SQLite's write lock on the database
file (`BEGIN IMMEDIATE` on a connection of its own) as soon as the upload is answered: the
child's first write (after its ~1 s of imports) waits in the busy handler until the test
lets go."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from gateway.intake.ingest_process import MODULE, settings_from_payload, settings_payload
from shared.settings import Settings
from tests.support.gateway import Gateway, StageServer, gateway_process
from tests.support.images import zip_of_images
from tests.support.processes import living_children
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
N = 12
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")


def _children(parent: int) -> list[int]:
    """The ingest children of `parent` alive now (zombies left out), from /proc."""
    return living_children(parent, MODULE)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextmanager
def _write_lock(data_dir: Path) -> Iterator[Callable[[], None]]:
    """SQLite's write lock on the gateway's database, held until the block ends or the
    yielded `release()` is called."""
    conn = sqlite3.connect(data_dir / "mattepipe.db", isolation_level=None, timeout=60,
                           check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def release() -> None:
        if not done.is_set():
            done.set()
            conn.execute("ROLLBACK")

    try:
        yield release
    finally:
        release()
        conn.close()


def _upload(client: httpx.Client, n: int = N) -> str:
    body = zip_of_images([f"d/{i:04d}.jpg" for i in range(n)])
    r = client.post("/upload", content=body, headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def test_settings_cross_the_pipe_whole_secrets_included(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path, api_key="k3y",  # type: ignore[call-arg]
                 internal_token="tok", database_url="", ingest_nice=7)
    back = settings_from_payload(settings_payload(s))
    assert back == s
    assert back.api_key is not None and back.api_key.get_secret_value() == "k3y"


def test_a_big_upload_is_ingested_by_a_child_and_runs_to_the_end(
    start_gateway: Start, stage_server: StageServer, data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = start_gateway(stage_server.url, ingest_child_min_bytes=0)
    job = _upload(gw.client)
    wait_for(lambda: gw.client.get(f"/status/{job}").json()["state"] == "completed", 120)
    s = gw.client.get(f"/status/{job}").json()
    assert s["total"] == N and s["completed"] == N
    # the child's own log (`gateway-ingest`), beside the gateway's
    assert f"job {job}: {N} tasks" in (data_dir / "logs" / "gateway-ingest.log").read_text()
    wait_for(lambda: not _children(os.getpid()), 60, "the child's exit")
    assert "ended by" not in caplog.text  # it exited 0: no redo, no abort at its shutdown


def test_a_small_upload_stays_in_the_gateway(
    start_gateway: Start, stage_server: StageServer, data_dir: Path
) -> None:
    gw = start_gateway(stage_server.url)  # INGEST_CHILD_MIN_BYTES: 1 MiB, the zip is ~10 KB
    job = _upload(gw.client)
    wait_for(lambda: gw.client.get(f"/status/{job}").json()["state"] == "completed", 120)
    assert not (data_dir / "logs" / "gateway-ingest.log").exists()


def test_a_child_that_dies_is_redone_and_the_job_still_runs(
    start_gateway: Start, stage_server: StageServer, data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = start_gateway(stage_server.url, ingest_child_min_bytes=0)
    job = _upload(gw.client)
    with _write_lock(data_dir):  # before the child's first write: its start takes ~1 s
        wait_for(lambda: _children(os.getpid()), 60, "the ingest child")
        first = _children(os.getpid())[0]
        os.kill(first, signal.SIGKILL)  # as the OOM killer would
        wait_for(lambda: _gone(first), 60, "the first child's end")
    wait_for(lambda: gw.client.get(f"/status/{job}").json()["state"] == "completed", 120)
    s = gw.client.get(f"/status/{job}").json()
    assert s["total"] == N and s["completed"] == N  # the dead attempt's rows were wiped
    assert "ended by signal 9" in caplog.text
    assert "ended by signal 6" not in caplog.text and "exit code" not in caplog.text
    with sqlite3.connect(data_dir / "mattepipe.db") as conn:
        (attempts,) = conn.execute("SELECT ingest_attempts FROM jobs WHERE id = ?",
                                   (job,)).fetchone()
    # the finished attempt, and the dead child's if it had begun before the test's lock
    assert 1 <= attempts <= 2


def test_cancelling_the_job_stops_its_child(
    start_gateway: Start, stage_server: StageServer, data_dir: Path
) -> None:
    gw = start_gateway(stage_server.url, ingest_child_min_bytes=0)
    answers: list[httpx.Response] = []
    job = _upload(gw.client)
    with _write_lock(data_dir) as release:
        wait_for(lambda: _children(os.getpid()), 60, "the ingest child")
        child = _children(os.getpid())[0]
        # DELETE stops the ingest first, then writes `cancelled` (which waits for our lock)
        t = threading.Thread(target=lambda: answers.append(gw.client.delete(f"/jobs/{job}")))
        t.start()
        wait_for(lambda: _gone(child), 60, "the child stopped")
        release()
        t.join(60)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["state"] == "cancelled"
    assert gw.client.get(f"/status/{job}").json()["state"] == "cancelled"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_child_never_outlives_the_gateway(data_dir: Path, how: signal.Signals) -> None:
    env = {"DATA_DIR": str(data_dir), "INGEST_CHILD_MIN_BYTES": "0", "LOG_LEVEL": "WARNING",
           "MAX_JOBS_PER_HOUR": "0", "MAX_JOBS_PER_DAY": "0"}
    with gateway_process(env) as (proc, url), httpx.Client(base_url=url, timeout=30) as c:
        _upload(c)
        with _write_lock(data_dir):
            wait_for(lambda: _children(proc.pid), 60, "the ingest child")
            child = _children(proc.pid)[0]
            proc.send_signal(how)
            # SIGTERM: the gateway's shutdown stops it; SIGKILL: the kernel does
            # (PR_SET_PDEATHSIG) — while the child is stuck on the lock either way
            wait_for(lambda: _gone(child), 90, f"the child gone after {how.name}")
        proc.wait(60)
