"""Issue 17, orchestration: a batch answer is parsed in one pass, each body straight into its
type (`stage_calls._typed_answers`); whatever does not fit that takes the general path. Every
answer must mean the same task outcome either way: a real server sends each answer, and the
outcomes are compared with the one-pass parse switched off."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.pipeline import stage_calls
from shared.schemas import MattingParams, MattingRequest
from shared.stages import Stage
from shared.storage import Storage
from tests.support.servers import ThreadServer

OK = {"status": "success", "output": "matting_output/j/a.png", "worker_id": "w1",
      "timings": {"queued": 1.0, "started": 2.0, "finished": 3.0, "batch_size": 2},
      "extra": {"confidence": 0.5}}
NO_STATUS = {k: v for k, v in OK.items() if k != "status"}
ERR = {"status": "error", "detail": "cannot decode input/j/b.png", "retryable": False,
       "worker_id": "w1"}

CASES: dict[str, list[dict[str, Any]]] = {
    "success and error": [{"status_code": 200, "body": OK}, {"status_code": 400, "body": ERR}],
    "error body under 200": [{"status_code": 200, "body": OK}, {"status_code": 200, "body": ERR}],
    "success without status": [{"status_code": 200, "body": NO_STATUS},
                               {"status_code": 500, "body": ERR}],
    "success under 500": [{"status_code": 500, "body": OK}, {"status_code": 200, "body": OK}],
    "bare error": [{"status_code": 200, "body": OK},
                   {"status_code": 503, "body": {"detail": "busy"}}],
    "missing output": [{"status_code": 200, "body": {**OK, "output": "matting_output/j/b.png"}},
                       {"status_code": 200, "body": OK}],
    "one answer for two": [{"status_code": 200, "body": OK}],
}
TYPED = {"success and error", "missing output", "one answer for two"}
"""The cases the one-pass parse takes; the others go the general way."""


class _Answers:
    """An ASGI app answering every POST with `self.body`."""

    def __init__(self) -> None:
        self.body = b"{}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture(scope="module")
def answers() -> Any:
    app = _Answers()
    with ThreadServer(app) as srv:
        yield app, srv.url


async def _outcomes(url: str, storage: Storage) -> list[dict[str, Any]]:
    reqs = [MattingRequest(task_id=i, job_id="j", input=f"input/j/{n}.png",
                           output=f"matting_output/j/{n}.png", params=MattingParams())
            for i, n in enumerate("ab")]
    async with httpx.AsyncClient() as client:
        outs = await stage_calls.call_stage_batch(client, f"{url}/matting/batch", Stage.MATTING,
                                                  reqs, storage, 10.0)
    return [{**asdict(o), "result": o.result.model_dump() if o.result else None} for o in outs]


@pytest.mark.parametrize("case", sorted(CASES))
async def test_one_pass_parse_means_what_the_general_path_means(
        case: str, answers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, url = answers
    storage = Storage(tmp_path)
    storage.ensure_layout()
    (tmp_path / "matting_output" / "j").mkdir()
    (tmp_path / "matting_output" / "j" / "a.png").write_bytes(b"x")
    app.body = json.dumps({"answers": CASES[case]}).encode()
    assert (stage_calls._typed_answers(app.body) is not None) == (case in TYPED)
    fast = await _outcomes(url, storage)
    monkeypatch.setattr(stage_calls, "_typed_answers", lambda content: None)
    general = await _outcomes(url, storage)
    assert fast == general
    assert len(fast) == 2
    if case == "success and error":
        assert fast[0]["result"]["extra"] == {"confidence": 0.5} and not fast[0]["error"]
        assert fast[1]["error"] == "matting: cannot decode input/j/b.png"
        assert fast[1]["retryable"] is False


async def test_a_body_that_is_no_batch_answer_is_malformed_for_every_task(
        answers: Any, tmp_path: Path) -> None:
    app, url = answers
    app.body = b'{"answers": 3}'
    outs = await _outcomes(url, Storage(tmp_path))
    assert [o["error"].startswith("matting answer malformed") for o in outs] == [True, True]
