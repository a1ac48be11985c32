"""Output options on the real stack: `format=webp&max_size=64&background=%23ffffff&crop=5`
→ the zip holds `matting_output/<x>.webp`, cropped, at most 64 px, on white; the comparison
still measures the full-size matte against the ground truth."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.support.images import make_zip, photo_bytes, studio_shot
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_webp_scaled_flattened_cropped(stack: Stack) -> None:
    disc, disc_gt = studio_shot()
    members = {"studio/disc.png": disc, "gt/studio/disc.png": disc_gt,
               "cat.jpg": photo_bytes("chelsea.jpg")}
    with stack.client() as c:
        r = c.post("/upload?format=webp&max_size=64&background=%23ffffff&crop=5",
                   content=make_zip(members), headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed", st
        assert (st["format"], st["max_size"], st["background"], st["crop"]) == (
            "webp", 64, "#ffffff", 5.0)
        r = c.get(job["download_url"])
        assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    assert {"matting_output/studio/disc.webp", "matting_output/cat.webp"} <= names
    assert not any(n.endswith(".png") for n in names if n.startswith("matting_output/"))
    for stem in ("studio/disc", "cat"):
        im = Image.open(io.BytesIO(zf.read(f"matting_output/{stem}.webp")))
        assert im.format == "WEBP" and im.mode == "RGB"  # flattened: no alpha
        assert max(im.size) <= 64
        if stem == "cat":  # a large photo: scaled down to exactly the limit
            assert max(im.size) == 64
        assert f"final_results/{stem}_compare.jpg" in names
    gt = np.asarray(Image.open(io.BytesIO(disc_gt)).convert("L"))
    ys, xs = np.nonzero(gt > 8)
    box_w, box_h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    disc_im = Image.open(io.BytesIO(zf.read("matting_output/studio/disc.webp")))
    # cropped to the object (+5 %): the aspect is the box's, not the photo's
    assert abs(disc_im.width / disc_im.height - box_w / box_h) < 0.15
    corner = np.asarray(disc_im.convert("RGB"))[0, 0].astype(int)
    assert (corner > 235).all()  # the margin is the white background
    report = json.loads(zf.read("report.json"))
    by_path = {item["path"]: item for item in report["items"]}
    assert by_path["studio/disc.png"]["matting_output"] == "matting_output/studio/disc.webp"
    metrics = by_path["studio/disc.png"]["metrics"]
    assert metrics and metrics["mse"] < 0.01  # measured on the full-size matte
