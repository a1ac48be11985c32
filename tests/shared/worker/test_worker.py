"""The worker server core with a small stage of its own (real HTTP, real batching)."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from shared.errors import EngineError
from shared.imaging import ImageRejected
from shared.internal_auth import MissingInternalToken
from shared.schemas import StageRequest
from shared.settings import Settings
from shared.storage import PathOutsideDataDir, Storage, atomic_write_bytes
from shared.worker.server import create_worker_app
from shared.worker.stage import (
    BadInput,
    BatchPolicy,
    StageFailure,
    StageOutput,
    classify_error,
    thread_count,
)
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ThreadServer
from tests.support.waiting import wait_for


class EchoParams(BaseModel):
    fail: str | None = None


class EchoStage:
    """Upper-cases a text file; `params.fail` picks a failure, `poison` breaks a batch."""

    name = "echo"
    route = "/echo"
    request_model = StageRequest[EchoParams]

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.batches: list[int] = []
        self.load_error: str | None = None

    def load(self) -> None:
        assert self.loaded.wait(30)
        if self.load_error:
            raise RuntimeError(self.load_error)

    def capacity(self) -> int:
        return 4

    def info(self) -> dict[str, Any]:
        return {"engine": "echo"}

    def batch_key(self, req: StageRequest[EchoParams]) -> str:
        return "echo"

    def ensure(self, key: str) -> BatchPolicy:
        return BatchPolicy(max_batch_size=8)

    def prepare(self, req: StageRequest[EchoParams], storage: Storage) -> tuple[str, Path]:
        fail = req.params.fail
        if fail == "disk":
            raise OSError(errno.ENOSPC, "No space left on device")
        if fail == "crash":
            raise RuntimeError("something broke")
        if fail == "bad":
            raise BadInput("bad parameter")
        if fail == "busy":
            raise StageFailure("engine busy", status=503, retryable=True)
        return storage.resolve(req.input).read_text(), storage.resolve(req.output)

    def run_batch(self, key: str, items: list[tuple[str, Path]]) -> list[str]:
        self.batches.append(len(items))
        time.sleep(0.2)  # long enough for concurrent requests to queue behind it
        if any(text == "poison" for text, _ in items):
            raise ValueError("poisoned batch")
        return [text.upper() for text, _ in items]

    def finish(self, req: StageRequest[EchoParams], item: tuple[str, Path], out: str,
               storage: Storage) -> StageOutput:
        atomic_write_bytes(item[1], out.encode())
        return StageOutput(req.output, {"length": len(out)})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[ThreadServer, EchoStage, Path]]:
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c", "poison"):
        (tmp_path / "in" / name).write_text(name if name != "poison" else "poison")
    stage = EchoStage()
    app = create_worker_app(stage, Settings(data_dir=tmp_path, internal_token=INTERNAL_TOKEN),
                            "echo-1", 0)
    with ThreadServer(app) as srv:
        yield srv, stage, tmp_path
        stage.loaded.set()


def call(srv: ThreadServer, task: int, inp: str, out: str, **params: Any) -> httpx.Response:
    body = {"task_id": task, "job_id": "j", "input": inp, "output": out, "params": params}
    return httpx.post(srv.url + "/echo", json=body, timeout=30, headers=INTERNAL_HEADERS)


def test_health_is_loading_until_the_stage_has_loaded(setup: Any) -> None:
    srv, stage, data = setup
    r = httpx.get(srv.url + "/health")
    assert (r.status_code, r.json()["status"]) == (503, "loading")
    early = call(srv, 1, "in/a", "out/a")
    assert early.status_code == 503 and early.json()["retryable"] is True
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    r = call(srv, 1, "in/a", "out/a")
    assert r.status_code == 200, r.text
    assert (data / "out/a").read_text() == "A"
    assert r.json()["extra"] == {"length": 1}


def test_failed_load_reports_error(setup: Any) -> None:
    srv, stage, _ = setup
    stage.load_error = "weights missing"
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").json()["status"] == "error", what="error")
    r = httpx.get(srv.url + "/health")
    assert r.status_code == 503 and "weights missing" in r.json()["detail"]


@pytest.mark.parametrize(
    ("params", "inp", "status", "retryable"),
    [
        ({"fail": "disk"}, "in/a", 507, True),
        ({"fail": "crash"}, "in/a", 500, True),
        ({"fail": "bad"}, "in/a", 400, False),
        ({"fail": "busy"}, "in/a", 503, True),
        ({}, "../etc/passwd", 400, False),
        ({}, "in/missing", 400, False),
    ],
)
def test_errors_map_to_status_and_retryable(
    setup: Any, params: dict[str, str], inp: str, status: int, retryable: bool
) -> None:
    srv, stage, _ = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    r = call(srv, 2, inp, "out/x", **params)
    assert r.status_code == status, r.text
    assert r.json()["retryable"] is retryable and r.json()["worker_id"] == "echo-1"


def test_params_that_do_not_fit_the_stage_are_refused_for_good(setup: Any) -> None:
    srv, stage, _ = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    r = call(srv, 3, "in/a", "out/x", fail=5)
    assert r.status_code == 400, r.text
    assert r.json()["retryable"] is False and "params.fail" in r.json()["detail"]


def test_a_poisoned_item_fails_alone(setup: Any) -> None:
    srv, stage, data = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    names = ["a", "b", "poison", "c"]

    def one(i: int) -> httpx.Response:
        return call(srv, i, f"in/{names[i % 4]}", f"out/{i}", )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    for i, r in enumerate(answers):
        if names[i % 4] == "poison":
            # the exception's kind, not its text (that stays in the worker's log)
            detail = r.json()["detail"]
            assert r.status_code == 500 and "ValueError" in detail and "poisoned" not in detail
        else:
            assert r.status_code == 200, r.text
            assert (data / f"out/{i}").read_text() == names[i % 4].upper()
    assert max(stage.batches) > 1  # batches did form, and one bad item did not sink them


def test_classify_error_covers_the_contract() -> None:
    assert classify_error(PathOutsideDataDir("x"))[:2] == (400, False)
    assert classify_error(ImageRejected("x"))[:2] == (400, False)
    assert classify_error(OSError(errno.ENOSPC, "full"))[:2] == (507, True)

    class EngineLike(EngineError):  # the verdict comes from the tree, not duck typing
        def __init__(self, retryable: bool) -> None:
            super().__init__("engine", retryable=retryable)

    assert classify_error(EngineLike(False))[:2] == (400, False)
    assert classify_error(EngineLike(True))[:2] == (503, True)
    assert classify_error(KeyError("k"))[:2] == (500, True)


def test_thread_count_divides_cores_among_workers() -> None:
    assert thread_count(Settings(worker_threads=3)) == 3
    n = thread_count(Settings(worker_threads=0, matting_workers=1, comparison_workers=0))
    assert n >= 1


def test_a_missing_input_is_named_relative_to_data_dir(setup: Any) -> None:
    srv, stage, data = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    r = call(srv, 1, "in/missing", "out/x")
    assert r.status_code == 400 and r.json()["retryable"] is False
    assert r.json()["detail"] == "file not found: in/missing"
    assert str(data.resolve()) not in r.text


def test_every_route_but_health_needs_the_internal_token(setup: Any) -> None:
    srv, stage, data = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    body = {"task_id": 9, "job_id": "j", "input": "in/a", "output": "out/forged", "params": {}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": INTERNAL_TOKEN},
                    {"Authorization": f"Bearer {INTERNAL_TOKEN}x"}):
        r = httpx.post(srv.url + "/echo", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["retryable"] is False, r.text
        for path in ("/info", "/metrics", "/docs", "/openapi.json"):
            assert httpx.get(srv.url + path, headers=headers).status_code == 401, path
    assert not (data / "out/forged").exists() and stage.batches == []  # nothing ran
    assert httpx.post(srv.url + "/echo", json=body, headers=INTERNAL_HEADERS).status_code == 200


def test_a_worker_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(MissingInternalToken, match="INTERNAL_TOKEN"):
        create_worker_app(EchoStage(), Settings(data_dir=tmp_path, internal_token=""), "e", 0)
