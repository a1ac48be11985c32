"""Model against model in the matting stage: one request, every named engine, every output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from matting_worker.stage import MattingStage, request_models
from shared.schemas import MattingParams, MattingRequest, StageRequest
from shared.storage import Storage
from shared.worker.stage import BadInput

SAMPLE = Path(__file__).resolve().parents[2] / "mattepipe" / "assets" / "samples" / "chelsea.jpg"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    d = tmp_path_factory.mktemp("data")
    (d / "input/j").mkdir(parents=True)
    for name, size in (("cat", (64, 48)), ("wide", (80, 40))):
        Image.open(SAMPLE).convert("RGB").resize(size).save(d / f"input/j/{name}.jpg")
    return Storage(d)


def request(name: str, **params: Any) -> MattingRequest:
    return MattingRequest(task_id=1, job_id="j", input=f"input/j/{name}.jpg",
                          output=f"matting_output/j/{name}.png",
                          params=MattingParams.model_validate(params))


def run(stage: MattingStage, storage: Storage,
        reqs: list[StageRequest[MattingParams]]) -> list[dict[str, Any]]:
    """What the worker does with one batch: one key, prepare each, one run_batch, finish each."""
    keys = {stage.batch_key(r) for r in reqs}
    assert len(keys) == 1
    key = keys.pop()
    stage.ensure(key)
    items = [stage.prepare(r, storage) for r in reqs]
    outs = stage.run_batch(key, items)
    return [stage.finish(r, it, o, storage).extra for r, it, o in zip(reqs, items, outs,
                                                                        strict=True)]


def alpha_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.getchannel("A") if im.mode == "RGBA" else im)


def test_each_engine_writes_its_own_cut_out(stage: MattingStage, storage: Storage) -> None:
    reqs = [request(n, models=["classical", "identity"])
            for n in ("cat", "wide")]
    extras = run(stage, storage, reqs)
    root = storage.root / "matting_output/j"
    for name, extra in zip(("cat", "wide"), extras, strict=True):
        first, second = root / f"{name}.png", root / f"{name}.identity.png"
        assert extra["outputs"] == {"classical": f"matting_output/j/{name}.png",
                                    "identity": f"matting_output/j/{name}.identity.png"}
        assert extra["engine"] == "classical" and extra["engines"] == ["classical", "identity"]
        a1, a2 = alpha_of(first), alpha_of(second)
        assert a1.shape == a2.shape  # both at the input's size
        assert a2.min() == 255  # identity: alpha 1 everywhere
        assert a1.min() < 128 < a1.max()  # classical really cut something out
    assert "identity" in stage.engines


def test_both_mode_writes_an_alpha_file_per_model(stage: MattingStage, storage: Storage) -> None:
    [extra] = run(stage, storage, [request("cat", models=["identity", "classical"],
                                           output="both")])
    root = storage.root / "matting_output/j"
    assert extra["alpha_output"] == "matting_output/j/cat.alpha.png"
    assert extra["alpha_outputs"]["classical"] == "matting_output/j/cat.classical.alpha.png"
    with Image.open(root / "cat.classical.alpha.png") as im:
        assert im.mode == "L"
    assert alpha_of(root / "cat.alpha.png").min() == 255  # the first model is identity here
    np.testing.assert_array_equal(alpha_of(root / "cat.classical.alpha.png"),
                                  alpha_of(root / "cat.classical.png"))


def test_single_model_request_is_unchanged(stage: MattingStage, storage: Storage) -> None:
    [extra] = run(stage, storage, [request("wide", models=["identity"])])
    assert extra == {"engine": "identity", "width": 80, "height": 40}
    assert stage.batch_key(request("wide")) == "classical"


def test_batch_is_as_big_as_the_smallest_engine_allows(stage: MattingStage) -> None:
    both = stage.ensure("classical,identity").max_batch_size
    assert both == min(stage.ensure("classical").max_batch_size,
                       stage.ensure("identity").max_batch_size)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"models": []}, "non-empty"),
        ({"models": "classical"}, "non-empty list"),
        ({"models": ["classical", "classical"]}, "twice"),
        ({"models": ["classical", 3]}, "not an engine name"),
        ({"models": ["classical,identity"]}, "not an engine name"),
        ({"models": ["classical", "identity"], "model": "classical"}, "model\n.*Extra inputs"),
        ({"model": "identity"}, "model\n.*Extra inputs"),  # the single-model field is gone
    ],
)
def test_bad_model_lists_are_refused(params: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        MattingParams.model_validate(params)


def test_no_model_list_means_the_default_engine() -> None:
    assert request_models(MattingParams(), "classical") == ["classical"]
    assert request_models(MattingParams(models=["identity"]), "classical") == ["identity"]


def test_unknown_engine_in_the_list_is_bad_input(stage: MattingStage) -> None:
    key = stage.batch_key(request("cat", models=["classical", "no-such-model"]))
    with pytest.raises(BadInput, match="unknown model"):
        stage.ensure(key)


def test_a_model_called_alpha_cannot_overwrite_the_alpha_file(
    stage: MattingStage, storage: Storage
) -> None:
    req = request("cat", models=["classical", "alpha"], output="both")
    with pytest.raises(BadInput, match="same name"):
        stage.prepare(req, storage)
