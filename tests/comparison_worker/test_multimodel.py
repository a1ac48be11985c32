"""Model against model in the comparison stage: `params.mattes` → a row and metrics per model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from comparison_worker.stage import ComparisonStage
from shared.schemas import ComparisonRequest
from shared.settings import Settings
from shared.storage import PathOutsideDataDir, Storage
from shared.worker.stage import BadInput
from tests.support.images import stage_inputs

H, W = 40, 60


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    d = tmp_path_factory.mktemp("data")
    gt = stage_inputs(d, 1, H, W)
    Image.fromarray(gt, "L").save(d / "input/j/gt.png")
    Image.fromarray(np.dstack([np.full((H, W, 3), 90, np.uint8), gt]), "RGBA").save(
        d / "matting_output/j/p.png")  # the perfect model
    Image.fromarray(np.full((H, W), 255, np.uint8), "L").save(
        d / "matting_output/j/p.identity.png")  # alpha 1 everywhere
    Image.fromarray(gt, "L").resize((W // 2, H // 2)).save(
        d / "matting_output/j/p.small.png")  # a matte at half size
    return Storage(d)


@pytest.fixture(scope="module")
def stage(storage: Storage) -> ComparisonStage:
    st = ComparisonStage(Settings(_env_file=None, data_dir=storage.root,  # type: ignore[call-arg]
                                  worker_threads=1))
    st.load()
    return st


def run(stage: ComparisonStage, storage: Storage, out: str, **params: Any) -> dict[str, Any]:
    req = ComparisonRequest(task_id=3, job_id="j", input="input/j/p.png", output=out,
                            params=params)
    item = stage.prepare(req, storage)
    [cmp] = stage.run_batch(stage.batch_key(req), [item])
    return stage.finish(req, item, cmp, storage).extra


def mattes(*models: str) -> list[dict[str, str]]:
    names = {"classical": "p.png", "identity": "p.identity.png", "small": "p.small.png"}
    return [{"model": m, "path": f"matting_output/j/{names[m]}"} for m in models]


def sheet_height(storage: Storage, rel: str) -> int:
    with Image.open(storage.resolve(rel)) as im:
        assert im.format == "JPEG"
        return im.height


def test_every_model_is_scored_and_gets_a_row(stage: ComparisonStage, storage: Storage) -> None:
    extra = run(stage, storage, "final_results/j/two_compare.jpg", gt="input/j/gt.png",
                mattes=mattes("classical", "identity"),
                metrics_output="final_results/j/two_metrics.json")
    m = extra["metrics"]
    assert list(m) == ["classical", "identity"]  # the request's order
    assert m["classical"]["mse"] == pytest.approx(0.0, abs=1e-6)
    assert m["identity"]["mse"] == pytest.approx(1 - 20 * 30 / (H * W), rel=1e-3)
    single = run(stage, storage, "final_results/j/one_compare.jpg", gt="input/j/gt.png",
                 mattes=[{"model": "classical", "path": "matting_output/j/p.png"}])
    assert list(single["metrics"]) == ["classical"]
    assert sheet_height(storage, "final_results/j/two_compare.jpg") > sheet_height(
        storage, "final_results/j/one_compare.jpg")
    saved = json.loads(storage.resolve("final_results/j/two_metrics.json").read_text())
    assert [x["model"] for x in saved["mattes"]] == ["classical", "identity"]


def test_a_matte_of_another_size_is_fitted_and_noted(
    stage: ComparisonStage, storage: Storage
) -> None:
    extra = run(stage, storage, "final_results/j/small_compare.jpg",
                mattes=mattes("classical", "small"))
    assert any("small" in n and "resized" in n for n in extra["notes"])
    assert set(extra["metrics"]) == {"classical", "small"}


@pytest.mark.parametrize(
    ("params", "error", "reason"),
    [
        ({"mattes": []}, ValidationError, "non-empty"),
        ({"mattes": [{"path": "matting_output/j/p.png"}]}, ValidationError, "model, path"),
        ({"mattes": mattes("classical", "classical")}, ValidationError, "twice"),
        ({"mattes": [{"model": "x", "path": None}]}, ValidationError, "mattes.0.path"),
        ({"matte": "matting_output/j/p.png", "model": "classical"}, ValidationError,
         "matte\n.*Extra inputs"),  # the single-model fields are gone
        ({"mattes": [{"model": "x", "path": "matting_output/j/nope.png"}]}, BadInput,
         "mattes\\[0\\].path not found"),
        ({"mattes": [{"model": "x", "path": "../etc/passwd"}]}, PathOutsideDataDir, "DATA_DIR"),
    ],
)
def test_bad_matte_lists_are_refused(
    stage: ComparisonStage, storage: Storage, params: dict[str, Any], error: type[Exception],
    reason: str,
) -> None:
    with pytest.raises(error, match=reason):
        req = ComparisonRequest(task_id=3, job_id="j", input="input/j/p.png",
                                output="final_results/j/bad_compare.jpg", params=params)
        stage.prepare(req, storage)
