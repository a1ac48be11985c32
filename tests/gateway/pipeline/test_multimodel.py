"""Model against model in the gateway: options, stage requests, the zip and its report."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.api.uploads import validate_job_options
from gateway.db.database import Database
from gateway.db.tables import Task
from gateway.db.transitions import Claimed
from gateway.errors import BadRequest
from gateway.pipeline.scheduler import Scheduler
from gateway.results.zip_stream import build_zip
from shared.schemas import StageRequest
from shared.stages import Stage
from shared.storage import Storage, model_output_rel
from tests.support.gateway import Gateway, make_settings

Start = Callable[..., Gateway]


def test_model_output_names() -> None:
    first = "matting_output/j/a/b.png"
    assert model_output_rel(first, "classical", 0) == first
    assert model_output_rel(first, "classical", 0, alpha=True) == "matting_output/j/a/b.alpha.png"
    assert model_output_rel(first, "u2netp", 1) == "matting_output/j/a/b.u2netp.png"
    assert model_output_rel(first, "u2netp", 2, True) == "matting_output/j/a/b.u2netp.alpha.png"
    with pytest.raises(ValueError, match=r"ends in \.png"):
        model_output_rel("matting_output/j/a/b.jpg", "x", 1)


def test_job_options_normalise_and_refuse_duplicates(data_dir: Path) -> None:
    s = make_settings(data_dir)
    assert validate_job_options(s, " classical , identity", "rgba", None)[0] == \
        "classical,identity"
    with pytest.raises(BadRequest) as exc:
        validate_job_options(s, "classical,identity,classical", "rgba", None)
    assert exc.value.status_code == 400 and "classical more than once" in str(exc.value.detail)
    (data_dir / "models").mkdir(exist_ok=True)
    (data_dir / "models" / "alpha.onnx").write_bytes(b"not loaded at validation")
    assert validate_job_options(s, "classical,alpha", "rgba", None)[0] == "classical,alpha"
    assert validate_job_options(s, "alpha,classical", "both", None)[0] == "alpha,classical"
    with pytest.raises(BadRequest) as exc:
        validate_job_options(s, "classical,alpha", "both", None)
    assert exc.value.status_code == 400 and "'alpha'" in str(exc.value.detail)


def test_duplicate_model_upload_is_a_400(start_gateway: Start) -> None:
    c = start_gateway().client
    r = c.post("/upload?model=identity,identity", content=b"x")
    assert r.status_code == 400
    assert r.json() == {"detail": "model names identity more than once"}
    assert c.get("/jobs").json()["total"] == 0


def wire_params(req: StageRequest[Any]) -> Any:
    """The request's params as the stage API receives them (JSON)."""
    return req.model_dump(mode="json")["params"]


async def test_stage_requests_carry_every_model(data_dir: Path) -> None:
    settings = make_settings(data_dir)
    db = Database(settings.sqlite_url)
    try:
        sched = Scheduler(settings, db, Storage(data_dir))
        c = Claimed(7, "j", "a/b.jpg", "input/j/chunks/a/b.jpg", "input/j/gt/a/b.png",
                    "matting_output/j/a/b.png", 1.0, "classical,identity", "both")
        m = sched.request_for(Stage.MATTING, c)
        assert m.output == "matting_output/j/a/b.png"
        assert wire_params(m) == {"models": ["classical", "identity"], "output": "both"}
        cmp = wire_params(sched.request_for(Stage.COMPARISON, c))
        assert cmp["mattes"] == [
            {"model": "classical", "path": "matting_output/j/a/b.png"},
            {"model": "identity", "path": "matting_output/j/a/b.identity.png"},
        ]
        assert "matte" not in cmp and "model" not in cmp  # the single-model fields are gone
        assert cmp["gt"] == "input/j/gt/a/b.png"
        one = Claimed(8, "j", "x.jpg", "input/j/chunks/x.jpg", None, None, 1.0, "identity",
                      "rgba")
        assert wire_params(sched.request_for(Stage.MATTING, one))["models"] == ["identity"]
        assert wire_params(sched.request_for(Stage.COMPARISON, one))["mattes"] == [
            {"model": "identity", "path": "matting_output/j/x.png"}]
    finally:
        await db.close()


def _touch(storage: Storage, rel: str) -> None:
    p = storage.resolve(rel)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(rel.encode())  # content names the file: a swapped member would show


@pytest.mark.parametrize("output", ["rgba", "both"])
def test_zip_holds_every_models_cut_out_and_ranks_them(data_dir: Path, output: str) -> None:
    st = Storage(data_dir)
    models = ["classical", "identity"]
    tasks = []
    for path, mse in (("a/one.jpg", (0.01, 0.5)), ("two.png", (0.02, 0.3))):
        first = st.matting_rel("j", path)
        for i, m in enumerate(models):
            _touch(st, model_output_rel(first, m, i))
            if output == "both":
                _touch(st, model_output_rel(first, m, i, alpha=True))
        _touch(st, st.compare_rel("j", path))
        metrics = {m: {"sad": v, "mse": v, "grad": v, "conn": v}
                   for m, v in zip(models, mse, strict=True)}
        tasks.append(Task(job_id="j", path=path, state="completed", metrics=metrics))
    # the second model's cut-out of one image is missing (e.g. a partial download)
    st.resolve(model_output_rel(st.matting_rel("j", "two.png"), "identity", 1)).unlink()
    jz = build_zip(st, "j", output, tasks, models=models)
    zf = zipfile.ZipFile(io.BytesIO(b"".join(jz.stream)))
    names = set(zf.namelist())
    want = {"matting_output/a/one.png", "matting_output/a/one.identity.png",
            "matting_output/two.png"}
    if output == "both":
        want |= {"matting_output/a/one.alpha.png", "matting_output/a/one.identity.alpha.png",
                 "matting_output/two.alpha.png", "matting_output/two.identity.alpha.png"}
    assert {n for n in names if n.startswith("matting_output/")} == want
    assert jz.members == len(names)
    assert zf.read("matting_output/a/one.identity.png") == b"matting_output/j/a/one.identity.png"
    report = json.loads(zf.read("report.json"))
    assert report["models"] == models
    assert report["summary"]["ranking"]["mse"] == ["classical", "identity"]
    assert report["items"][0]["matting_output"] == "matting_output/a/one.png"
