"""`<route>/batch` on the worker server: several requests in one call, each answered as if it
had come alone, batched together by the stage's batcher; its size is bounded."""

from __future__ import annotations

from typing import Any

import httpx

from shared.limits import MAX_STAGE_BATCH
from tests.shared.worker.test_worker import setup  # noqa: F401 (fixture)
from tests.support.servers import INTERNAL_HEADERS
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
