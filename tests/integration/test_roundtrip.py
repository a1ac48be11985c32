"""A new user's round trip on the real stack: upload a tree, watch it, download the result."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from PIL import Image

from tests.support.images import make_zip, photo_bytes, studio_shot
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_nested_tree_with_a_corrupt_file_and_ground_truth(stack: Stack) -> None:
    disc, disc_gt = studio_shot()
    members = {
        "shoot/day1/coffee.jpg": photo_bytes("coffee.jpg"),
        "shoot/day1/rocket.jpg": photo_bytes("rocket.jpg"),
        "shoot/day2/deep/chelsea.jpg": photo_bytes("chelsea.jpg"),
        "shoot/studio/disc.png": disc,
        "shoot/broken.jpg": b"\xff\xd8\xff\xe0 this is not really a jpeg",
        "gt/studio/disc.png": disc_gt,
    }
    with stack.client() as c:
        r = c.post(
            "/upload", content=make_zip(members), headers={"Content-Type": "application/zip"}
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert set(job) >= {"job_id", "status_url", "download_url"}

        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed_with_errors"
        assert st["total"] == 5
        assert st["completed"] == 4
        assert st["rejected"] == 1
        assert st["progress"] == 100

        r = c.get(job["download_url"])
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    for stem, src in [
        ("shoot/day1/coffee", "shoot/day1/coffee.jpg"),
        ("shoot/day1/rocket", "shoot/day1/rocket.jpg"),
        ("shoot/day2/deep/chelsea", "shoot/day2/deep/chelsea.jpg"),
        ("shoot/studio/disc", "shoot/studio/disc.png"),
    ]:
        cut = Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.png")))
        assert cut.mode == "RGBA"
        assert cut.size == Image.open(io.BytesIO(members[src])).size
        assert f"final_results/{stem}_compare.jpg" in names
    assert {"report.json", "report.csv", "index.html"} <= names
    assert not any("broken" in n for n in names if n.startswith("matting_output/"))

    report = json.loads(zf.read("report.json"))
    by_path = {item["path"]: item for item in report["items"]}
    broken = by_path["shoot/broken.jpg"]
    assert broken["state"] == "rejected"
    assert broken["error"]
    assert report["summary"]["rejected"] == 1
    disc_metrics = by_path["shoot/studio/disc.png"]["metrics"]
    assert disc_metrics and disc_metrics["mse"] < 0.01
    # Issue 16: every matted item carries the engine's confidence in [0, 1]; the rejected one
    # was never matted and has none.
    for item in report["items"]:
        if item["state"] == "completed":
            assert 0.0 <= item["confidence"] <= 1.0, item
    assert broken["confidence"] is None


def test_unknown_job_is_404(stack: Stack) -> None:
    with stack.client() as c:
        for path in ("/status/nope", "/download/nope", "/jobs/nope/tasks"):
            r = c.get(path)
            assert r.status_code == 404
            assert "detail" in r.json()
