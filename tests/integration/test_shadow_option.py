"""Issue 16 on the real stack: `classical` takes a soft contact shadow for backdrop, the
`classical-shadows` model name (the job option) keeps it — both in one job, side by side."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.images import make_zip
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

H, W = 300, 400


def _shadow_shot() -> tuple[bytes, bytes, np.ndarray]:
    """(PNG, ground-truth PNG, shadow pixels): a blue box standing on a warm sheet, a soft
    shadow under it; the truth is the box alone."""
    m = np.zeros((H, W), np.float32)
    cv2.rectangle(m, (130, 80), (270, 200), 1.0, -1)
    alpha = np.asarray(cv2.GaussianBlur(m, (0, 0), 1.0), np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    shade = np.exp(-(((xx - 200) / 90) ** 2 + ((yy - 200) / 16) ** 2))
    back = np.array([225, 215, 200], np.float32)
    bg = back[None, None, :] * (1 - 0.4 * shade[..., None])
    img = alpha[..., None] * np.array([60, 90, 170], np.float32) + (1 - alpha[..., None]) * bg
    img += np.random.default_rng(0).normal(0, 1.5, img.shape)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    shadow = (alpha < 0.01) & (np.linalg.norm(rgb.astype(np.float32) - back, axis=2) > 30)

    def png(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    return png(rgb), png(np.rint(alpha * 255).astype(np.uint8)), shadow


def test_shadow_is_backdrop_unless_the_job_asks_to_keep_it(stack: Stack) -> None:
    image, gt, shadow = _shadow_shot()
    with stack.client() as c:
        r = c.post("/upload?model=classical,classical-shadows",
                   content=make_zip({"box.png": image, "gt/box.png": gt}),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed", st
        r = c.get(job["download_url"])
        assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    report = json.loads(zf.read("report.json"))
    assert report["models"] == ["classical", "classical-shadows"]

    def alpha(name: str) -> np.ndarray:
        im = Image.open(io.BytesIO(zf.read(f"matting_output/{name}.png")))
        return np.asarray(im.getchannel("A")).astype(np.float32) / 255

    removed, kept = alpha("box"), alpha("box.classical-shadows")
    assert shadow.sum() > 2000
    assert float(removed[shadow].mean()) < 0.05
    assert float(kept[shadow].mean()) > 0.2
    per = report["items"][0]["metrics_by_model"]
    assert per["classical"]["mse"] < per["classical-shadows"]["mse"]
