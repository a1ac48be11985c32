"""The worker's engines in memory (`matting_worker.engines.pool`): real ONNX models on disk,
at most MAX_LOADED_MODELS loaded, least recently used out, a changed file loaded again."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from matting_worker.engines.onnx_model import OnnxEngine
from matting_worker.stage import MattingStage
from shared.settings import Settings
from shared.worker.stage import BadInput
from tests.matting_worker.tiny_models import export_onnx

IMAGE = np.full((40, 56, 3), 128, np.uint8)


class Const(nn.Module):
    """A matte of `value` everywhere: which file answered is visible in the pixels."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.c.weight.zero_()
            self.c.bias.fill_(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x)


def const_model(path: Path, value: float) -> Path:
    """Written beside and renamed over `path`, as a careful admin replaces a model."""
    tmp = path.with_name(f".{path.name}.new")
    export_onnx(Const(value), tmp)
    os.replace(tmp, path)
    return path


def stage(models: Path, max_loaded: int) -> MattingStage:
    return MattingStage(Settings(models_dir=models, max_loaded_models=max_loaded,
                                 default_model="classical", _env_file=None))  # type: ignore[call-arg]


def alpha_of(st: MattingStage, name: str) -> float:
    with st.pool.using([name]) as engines:
        return float(engines[name].predict([IMAGE])[0].alpha.mean())


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    for name, value in (("low", 0.2), ("high", 0.8), ("mid", 0.5)):
        const_model(tmp_path / f"{name}.onnx", value)
    return tmp_path


def test_least_recently_used_is_unloaded_and_its_session_dropped(models: Path) -> None:
    st = stage(models, 1)
    low = st.engine("low")
    assert isinstance(low, OnnxEngine) and low.handle is not None
    assert alpha_of(st, "high") == pytest.approx(0.8, abs=0.01)
    assert [m["name"] for m in st.models()["loaded"]] == ["high"]
    assert low.handle is None  # the runtime's session is gone with it
    assert alpha_of(st, "low") == pytest.approx(0.2, abs=0.01)  # loaded again on use
    status = st.models()
    assert [m["name"] for m in status["loaded"]] == ["low"]
    assert (status["loads"], status["unloads"], status["max_loaded"]) == (3, 2, 1)


def test_order_is_by_last_use(models: Path) -> None:
    st = stage(models, 2)
    st.engine("low")
    st.engine("high")
    st.engine("low")  # low is now the most recent: high goes first
    st.engine("mid")
    assert [m["name"] for m in st.models()["loaded"]] == ["low", "mid"]


def test_a_request_naming_more_models_than_the_limit_still_runs(models: Path) -> None:
    st = stage(models, 1)
    with st.pool.using(["low", "high", "mid"]) as engines:
        assert len(st.pool.loaded()) == 3  # all pinned while the batch runs
        values = [float(engines[n].predict([IMAGE])[0].alpha.mean()) for n in engines]
    assert values == pytest.approx([0.2, 0.8, 0.5], abs=0.01)
    assert [m["name"] for m in st.models()["loaded"]] == ["mid"]  # back under the limit


def test_an_engine_in_use_is_not_unloaded_under_its_batch(models: Path) -> None:
    st = stage(models, 1)
    inside, leave = threading.Event(), threading.Event()
    seen: list[float] = []

    def batch() -> None:
        with st.pool.using(["low"]) as engines:
            inside.set()
            leave.wait(30)
            seen.append(float(engines["low"].predict([IMAGE])[0].alpha.mean()))

    t = threading.Thread(target=batch)
    t.start()
    assert inside.wait(30)
    assert alpha_of(st, "high") == pytest.approx(0.8, abs=0.01)  # over the limit meanwhile
    leave.set()
    t.join(30)
    assert seen == pytest.approx([0.2], abs=0.01)
    # `high` was the idle one when its own use ended (low still pinned): it went then
    assert [m["name"] for m in st.models()["loaded"]] == ["low"]


def test_a_changed_model_file_is_loaded_again_on_next_use(models: Path) -> None:
    st = stage(models, 4)
    assert alpha_of(st, "low") == pytest.approx(0.2, abs=0.01)
    const_model(models / "low.onnx", 0.9)
    assert alpha_of(st, "low") == pytest.approx(0.9, abs=0.01)
    assert st.models()["loads"] == 2


def test_a_changed_json_override_counts_as_a_change(models: Path) -> None:
    st = stage(models, 4)
    assert alpha_of(st, "low") == pytest.approx(0.2, abs=0.01)
    (models / "low.json").write_text('{"activation": "sigmoid"}')
    assert alpha_of(st, "low") == pytest.approx(1 / (1 + np.exp(-0.2)), abs=0.01)


def test_reload_loads_again_and_reports_a_broken_file(models: Path) -> None:
    st = stage(models, 4)
    st.engine("low")
    st.engine("high")
    (models / "high.onnx").write_bytes(b"not a model any more")
    out = st.reload_models(None)
    assert out["reloaded"] == ["low"]
    assert "cannot load ONNX model high.onnx" in out["failed"]["high"]
    assert st.reload_models(["nope"])["not_loaded"] == ["nope"]
    assert [m["name"] for m in st.models()["loaded"]] == ["low"]


def test_an_unknown_model_is_the_requests_fault(models: Path) -> None:
    with pytest.raises(BadInput, match="unknown model 'nope'"):
        stage(models, 1).engine("nope")
