"""Users' models dropped into MODELS_DIR of a running stack: listed, chosen, used end to end."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.matting_worker.tiny_models import RedChannel, export_onnx, save_script
from tests.support.images import make_zip, photo_bytes
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


def test_torchscript_and_onnx_models_through_the_pipeline(stack: Stack) -> None:
    models = stack.settings.models_dir
    models.mkdir(parents=True, exist_ok=True)
    # The matte is the normalised red channel: a real, checkable function of the pixels.
    save_script(RedChannel(), models / "redscript.pt")
    export_onnx(RedChannel(), models / "redonnx.onnx")
    for name in ("redscript", "redonnx"):
        (models / f"{name}.json").write_text(json.dumps({"mean": [0, 0, 0], "std": [1, 1, 1]}))

    with stack.client() as c:
        listed = {m["name"]: m["kind"] for m in c.get("/models").json()["models"]}
        assert listed["redscript"] == "torchscript"
        assert listed["redonnx"] == "onnx"
        photo = photo_bytes("coffee.jpg", 128)
        r = c.post("/upload?model=redscript,redonnx",
                   content=make_zip({"cups/coffee.jpg": photo}),
                   headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert stack.wait_final(job["job_id"])["state"] == "completed"
        zf = zipfile.ZipFile(io.BytesIO(c.get(job["download_url"]).content))

    red = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), np.float32)[..., 0] / 255.0
    for member in ("matting_output/cups/coffee.png", "matting_output/cups/coffee.redonnx.png"):
        cut = Image.open(io.BytesIO(zf.read(member)))
        assert cut.mode == "RGBA" and cut.size == (red.shape[1], red.shape[0])
        alpha = np.asarray(cut, np.float32)[..., 3] / 255.0
        assert np.abs(alpha - red).mean() < 0.05, member
