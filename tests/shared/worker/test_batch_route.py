"""`<route>/batch` on the worker server: several requests in one call, each answered as if it
had come alone, batched together by the stage's batcher; its size is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.limits import MAX_STAGE_BATCH
from shared.settings import Settings
from shared.worker.server import create_worker_app
from shared.worker.stage import BatchPolicy
from tests.shared.worker.test_worker import EchoStage, setup  # noqa: F401 (fixture)
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ThreadServer
from tests.support.waiting import wait_for


def req(task: int, inp: str, out: str, **params: Any) -> dict[str, Any]:
    return {"task_id": task, "job_id": "j", "input": inp, "output": out, "params": params}


def post_batch(url: str, requests: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(url + "/echo/batch", json={"requests": requests}, timeout=30,
                      headers=INTERNAL_HEADERS)


def test_a_batch_is_answered_request_by_request(setup: Any) -> None:  # noqa: F811
    srv, stage, data = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    r = post_batch(srv.url, [
        req(1, "in/a", "out/1"), req(2, "in/missing", "out/2"), req(3, "in/b", "out/3"),
        req(4, "in/c", "out/4", fail="busy"), req(5, "in/c", "out/5", fail=7),
    ])
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    assert [a["status_code"] for a in answers] == [200, 400, 200, 503, 400]
    assert answers[0]["body"]["output"] == "out/1" and (data / "out/1").read_text() == "A"
    assert (data / "out/3").read_text() == "B"
    assert answers[1]["body"]["retryable"] is False and "missing" in answers[1]["body"]["detail"]
    assert answers[3]["body"]["retryable"] is True
    assert "params.fail" in answers[4]["body"]["detail"]
    assert sum(stage.batches) == 2  # only the two good ones reached the engine


def test_a_batch_while_loading_answers_503_per_request(setup: Any) -> None:  # noqa: F811
    srv, _, _ = setup
    r = post_batch(srv.url, [req(1, "in/a", "out/1"), req(2, "in/b", "out/2")])
    assert r.status_code == 200
    assert [a["status_code"] for a in r.json()["answers"]] == [503, 503]


def test_empty_and_oversized_batches_are_refused(setup: Any) -> None:  # noqa: F811
    srv, stage, _ = setup
    stage.loaded.set()
    assert post_batch(srv.url, []).status_code == 422
    too_many = [req(i, "in/a", f"out/{i}") for i in range(MAX_STAGE_BATCH + 1)]
    r = post_batch(srv.url, too_many)
    assert r.status_code == 422 and r.json()["retryable"] is False
    assert stage.batches == []  # refused before any work
    unauth = httpx.post(srv.url + "/echo/batch", json={"requests": [req(1, "in/a", "o")]})
    assert unauth.status_code == 401


# --- issue 17: a batch call takes a few thread hops, and every request still fails alone ------
def test_a_batch_reaches_the_engine_in_full_batches_and_poison_fails_alone(
        setup: Any) -> None:  # noqa: F811
    """All of a batch call's requests are prepared together, so the batcher sees them at once
    and cuts full engine batches (8); a poisoned one is retried alone and fails alone."""
    srv, stage, data = setup
    stage.loaded.set()
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    names = ["a", "b", "c", "poison"] * 4
    reqs = [req(i, f"in/{n}", f"out/{i}") for i, n in enumerate(names)]
    reqs.insert(5, req(99, "in/missing", "out/99"))
    r = post_batch(srv.url, reqs)
    assert r.status_code == 200, r.text
    answers = r.json()["answers"]
    assert len(answers) == 17
    for rq, a in zip(reqs, answers, strict=True):
        if rq["task_id"] == 99:
            assert a["status_code"] == 400 and "missing" in a["body"]["detail"]
        elif rq["input"] == "in/poison":
            assert a["status_code"] == 500 and "ValueError" in a["body"]["detail"]
        else:
            assert a["status_code"] == 200, a
            assert (data / rq["output"]).read_text() == rq["input"][3:].upper()
    # two full engine batches (each poisoned, so retried one by one: `run_isolated`)
    assert stage.batches[0] == 8 and stage.batches.count(8) == 2


class OneAtATime(EchoStage):
    """A stage that batches nothing (as the comparison): `max_batch_size` 1."""

    def ensure(self, key: str) -> BatchPolicy:
        return BatchPolicy(max_batch_size=1, concurrency=1)

    def run_batch(self, key: str, items: list[tuple[str, Path]]) -> list[str]:
        self.batches.append(len(items))
        if any(text == "poison" for text, _ in items):
            raise ValueError("poisoned item")
        return [text.upper() for text, _ in items]


@pytest.fixture
def unbatched(tmp_path: Path) -> Iterator[tuple[ThreadServer, OneAtATime, Path]]:
    (tmp_path / "in").mkdir()
    for name in ("a", "b", "c", "poison"):
        (tmp_path / "in" / name).write_text(name)
    stage = OneAtATime()
    stage.loaded.set()
    app = create_worker_app(stage, Settings(data_dir=tmp_path, internal_token=INTERNAL_TOKEN),
                            "echo-1", 0)
    with ThreadServer(app) as srv:
        yield srv, stage, tmp_path


def test_a_stage_that_batches_nothing_answers_each_request_of_a_batch(
        unbatched: tuple[ThreadServer, OneAtATime, Path]) -> None:
    """The requests run in a few runs of several each (`answer_many`); a failure in any of
    prepare, run or finish is that request's answer only, and the rest of its run goes on."""
    srv, stage, data = unbatched
    wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="health ok")
    (data / "out").mkdir()
    (data / "out" / "dir").mkdir()  # finish cannot write over a folder
    reqs = [req(1, "in/a", "out/1"), req(2, "in/poison", "out/2"),
            req(3, "in/b", "out/3", fail="bad"), req(4, "in/c", "out/dir"),
            req(5, "in/missing", "out/5"), req(6, "in/c", "out/6"), req(7, "in/a", "out/7")]
    r = post_batch(srv.url, reqs)
    assert r.status_code == 200, r.text
    codes = [a["status_code"] for a in r.json()["answers"]]
    assert codes == [200, 500, 400, 500, 400, 200, 200]
    assert [(data / f"out/{i}").read_text() for i in (1, 6, 7)] == ["A", "C", "A"]
    assert stage.batches == [1] * 5  # every prepared request ran once, alone
    info = httpx.get(srv.url + "/info", headers=INTERNAL_HEADERS).json()
    assert info["batchers"]["echo"]["items"] == 7
