"""The matting stage with output options: WebP/AVIF with alpha, max_size, background, crop —
real engine, real encoders, files decoded back. The full-size `<x>.alpha.png` the stage keeps
beside a shaped cut-out is the reference the checks measure against."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from matting_worker.stage import MattingStage
from shared.finishing import avif_supported, bounding_box, crop_box
from shared.schemas import MattingParams, MattingRequest
from shared.storage import Storage
from shared.worker.stage import BadInput

SAMPLE = Path(__file__).resolve().parents[2] / "mattepipe" / "assets" / "samples" / "chelsea.jpg"
W, H = 120, 80


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    d = tmp_path_factory.mktemp("data")
    (d / "input/j").mkdir(parents=True)
    Image.open(SAMPLE).convert("RGB").resize((W, H)).save(d / "input/j/cat.jpg")
    return Storage(d)


def run(stage: MattingStage, storage: Storage, suffix: str, **params: Any) -> dict[str, Any]:
    req = MattingRequest(task_id=1, job_id="j", input="input/j/cat.jpg",
                         output=f"matting_output/j/cat{suffix}",
                         params=MattingParams.model_validate(params))
    key = stage.batch_key(req)
    stage.ensure(key)
    item = stage.prepare(req, storage)
    (out,) = stage.run_batch(key, [item])
    return stage.finish(req, item, out, storage).extra


def opened(path: Path) -> Image.Image:
    im = Image.open(io.BytesIO(path.read_bytes()))
    im.load()
    return im


def full_alpha(storage: Storage) -> np.ndarray:
    with Image.open(storage.root / "matting_output/j/cat.alpha.png") as im:
        assert im.size == (W, H)  # always the full-size matte
        return np.asarray(im.convert("L"))


def test_webp_keeps_the_alpha(stage: MattingStage, storage: Storage) -> None:
    extra = run(stage, storage, ".webp", format="webp")
    im = opened(storage.root / "matting_output/j/cat.webp")
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (W, H)
    alpha = np.asarray(im.getchannel("A"))
    assert alpha.min() < 128 < alpha.max()  # something was cut out
    assert np.array_equal(alpha, full_alpha(storage))  # the alpha plane is lossless
    assert extra["alpha_output"] == "matting_output/j/cat.alpha.png"


def test_avif_keeps_the_alpha(stage: MattingStage, storage: Storage) -> None:
    if not avif_supported():
        pytest.skip("this Pillow cannot write AVIF")
    run(stage, storage, ".avif", format="avif")
    im = opened(storage.root / "matting_output/j/cat.avif")
    assert im.format == "AVIF" and im.mode == "RGBA" and im.size == (W, H)
    diff = np.abs(np.asarray(im.getchannel("A"), np.int16) - full_alpha(storage).astype(np.int16))
    assert diff.mean() < 4


def test_max_size_scales_down(stage: MattingStage, storage: Storage) -> None:
    run(stage, storage, ".png", max_size=60)
    assert opened(storage.root / "matting_output/j/cat.png").size == (60, 40)
    run(stage, storage, ".png", max_size=1000)  # never up
    assert opened(storage.root / "matting_output/j/cat.png").size == (W, H)


def test_background_fills_what_was_transparent(stage: MattingStage, storage: Storage) -> None:
    run(stage, storage, ".png", background="#ff00ff")
    im = opened(storage.root / "matting_output/j/cat.png")
    assert im.mode == "RGB" and im.size == (W, H)
    alpha = full_alpha(storage)
    ys, xs = np.nonzero(alpha == 0)
    assert len(ys) > 0
    px = np.asarray(im)[ys, xs]
    assert (px == (255, 0, 255)).all()


def test_crop_is_the_box_plus_the_margin(stage: MattingStage, storage: Storage) -> None:
    run(stage, storage, ".png", crop=10)
    alpha = full_alpha(storage)
    box = bounding_box(alpha)
    assert box is not None
    left, top, right, bottom = crop_box(box, 10, W, H)
    im = opened(storage.root / "matting_output/j/cat.png")
    assert im.size == (right - left, bottom - top)
    assert np.array_equal(np.asarray(im.getchannel("A")), alpha[top:bottom, left:right])


def test_output_alpha_with_a_format(stage: MattingStage, storage: Storage) -> None:
    run(stage, storage, ".webp", format="webp", output="alpha", max_size=40)
    im = opened(storage.root / "matting_output/j/cat.webp")
    assert im.size == (40, 27)


def test_the_output_name_must_match_the_format(stage: MattingStage, storage: Storage) -> None:
    with pytest.raises(BadInput, match=r"must be a \.webp path"):
        run(stage, storage, ".png", format="webp")


def test_bad_options_are_refused_by_the_schema() -> None:
    for bad in ({"max_size": 3}, {"background": "white"}, {"crop": -2}, {"format": "gif"}):
        with pytest.raises(ValueError):
            MattingParams.model_validate(bad)
