"""The worker's batch answer, written by orjson (issue 17): `StageBatchAnswer`'s shape and
values, whatever the bodies hold."""

from __future__ import annotations

import json

from shared.formats import Metric
from shared.schemas import StageBatchAnswer, StageError, StageResult, Timings
from shared.worker.server import batch_answer_json


def test_the_batch_answer_is_what_the_model_writes() -> None:
    ok = StageResult(output="final_results/j/ä b.jpg", worker_id="cw-1",
                     timings=Timings(queued=1.5, started=2.25, finished=3.0, batch_size=1),
                     extra={"metrics": {"identity": {Metric.COVERAGE: 1.0,
                                                     Metric.UNCERTAIN: 1e-05}},
                            "has_gt": False, "notes": ["matte resized – 32x32"]})
    bad = StageError(detail="input not found: input/j/x.png", retryable=False, worker_id="cw-1")
    answers = [(200, ok.model_dump()), (400, bad.model_dump())]
    raw = batch_answer_json(answers)
    parsed = StageBatchAnswer.model_validate_json(raw)
    assert [(a.status_code, a.body) for a in parsed.answers] == [
        (200, json.loads(ok.model_dump_json())), (400, json.loads(bad.model_dump_json()))]
    assert json.loads(raw) == json.loads(StageBatchAnswer.model_validate(
        {"answers": [{"status_code": st, "body": b} for st, b in answers]}).model_dump_json())
