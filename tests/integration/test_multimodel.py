"""Model against model on the real stack: two models, ground truth, a ranking, a row per model."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from comparison_worker.engine import compare
from tests.support.images import make_zip, studio_shot
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

SHOTS = {"studio/a.png": (160, 120), "studio/b.png": (120, 120), "c.png": (140, 100)}


def test_two_models_are_ranked_with_a_row_each(stack: Stack) -> None:
    members: dict[str, bytes] = {}
    for path, (w, h) in SHOTS.items():
        members[path], members[f"gt/{path}"] = studio_shot(w, h)
    with stack.client() as c:
        r = c.post("/upload?model=classical,identity", content=make_zip(members),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed", st
        assert st["completed"] == 3 and st["model"] == "classical,identity"
        r = c.get(job["download_url"])
        assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())

    report = json.loads(zf.read("report.json"))
    assert report["models"] == ["classical", "identity"]
    ranking = report["summary"]["ranking"]
    assert ranking["mse"][0] == "classical" and ranking["sad"][0] == "classical"
    by_model = report["summary"]["by_model"]
    assert by_model["classical"]["mse"] < by_model["identity"]["mse"]
    assert by_model["identity"]["with_ground_truth"] == 3

    for path, (w, h) in SHOTS.items():
        stem = path[: -len(".png")]
        first = Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.png")))
        second = Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.identity.png")))
        assert first.mode == second.mode == "RGBA"
        assert first.size == second.size == (w, h)
        assert np.asarray(second.getchannel("A")).min() == 255  # identity: alpha 1
        assert np.asarray(first.getchannel("A")).min() == 0  # classical cut the backdrop

        sheet = Image.open(io.BytesIO(zf.read(f"final_results/{stem}_compare.jpg")))
        assert sheet.format == "JPEG"
        rgb = np.asarray(Image.open(io.BytesIO(members[path])).convert("RGB"))
        gt = np.asarray(Image.open(io.BytesIO(members[f"gt/{path}"]))).astype(np.float32) / 255
        one_row = compare(rgb, [("classical", gt)], gt).sheet
        assert sheet.height > one_row.shape[0]  # a row per model

    items = {it["path"]: it for it in report["items"]}
    assert set(items) == set(SHOTS)
    for it in items.values():
        per = it["metrics_by_model"]
        assert per["classical"]["mse"] < per["identity"]["mse"]
        assert it["metrics"] == per["classical"]  # the flat metrics are the first model's
    assert {"report.csv", "index.html"} <= names
    header = zf.read("report.csv").decode().splitlines()[0]
    assert "classical.mse" in header and "identity.mse" in header
