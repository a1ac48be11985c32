"""The output options' pure parts (`shared.finishing`): crop box, resize, background, encoders
and the option checks, on real Pillow images and real encoders."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.finishing import (
    MAX_SIZE_LIMIT,
    MIN_MAX_SIZE,
    OutputFormat,
    OutputOptions,
    apply_background,
    avif_supported,
    bounding_box,
    crop_box,
    encode_image,
    finish_image,
    parse_background,
    resize_max,
)


def cutout(w: int = 100, h: int = 80, box: tuple[int, int, int, int] = (20, 10, 60, 50)
           ) -> tuple[Image.Image, np.ndarray]:
    """A red RGBA image, opaque inside `box` (left, top, right, bottom; exclusive), else
    transparent with a green colour that must never show."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 1] = 255
    alpha = np.zeros((h, w), np.uint8)
    left, top, right, bottom = box
    rgb[top:bottom, left:right] = (255, 0, 0)
    alpha[top:bottom, left:right] = 255
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), alpha


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_bounding_box_ignores_faint_haze() -> None:
    _, alpha = cutout()
    alpha[0, 0] = 3  # below the threshold: background haze
    assert bounding_box(alpha) == (20, 10, 60, 50)
    assert bounding_box(np.zeros((5, 5), np.uint8)) is None


def test_crop_box_margin_is_a_share_of_the_box_and_clamped() -> None:
    assert crop_box((20, 10, 60, 50), 0, 100, 80) == (20, 10, 60, 50)
    assert crop_box((20, 10, 60, 50), 10, 100, 80) == (16, 6, 64, 54)  # 10 % of 40 each way
    assert crop_box((20, 10, 60, 50), 100, 100, 80) == (0, 0, 100, 80)  # clamped at the edges


def test_resize_scales_down_never_up() -> None:
    im, _ = cutout(200, 100)
    assert resize_max(im, 50).size == (50, 25)
    assert resize_max(im, 500) is im


def test_background_fills_transparent_pixels_with_the_colour() -> None:
    im, _ = cutout()
    flat = apply_background(im, "#0000ff")
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (0, 0, 255)  # was transparent green
    assert flat.getpixel((30, 20)) == (255, 0, 0)  # the object


@pytest.mark.parametrize(("raw", "want"), [
    ("#FFFFFF", "#ffffff"), ("ffffff", "#ffffff"), ("#fff", "#ffffff"), ("0a0", "#00aa00"),
    ("transparent", None), ("", None), (None, None),
])
def test_background_colours_parse(raw: str | None, want: str | None) -> None:
    assert parse_background(raw) == want


@pytest.mark.parametrize("junk", ["#ffff", "white", "#gggggg", "#ffffff;", "rgb(0,0,0)"])
def test_background_junk_is_refused(junk: str) -> None:
    with pytest.raises(ValueError, match="background must be a colour"):
        parse_background(junk)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"fmt": "gif"}, "unknown format"),
    ({"max_size": MIN_MAX_SIZE - 1}, "max_size must be between"),
    ({"max_size": MAX_SIZE_LIMIT + 1}, "max_size must be between"),
    ({"crop": -1.0}, "crop must be a margin"),
    ({"crop": 100.5}, "crop must be a margin"),
    ({"crop": float("nan")}, "crop must be a margin"),
])
def test_option_limits(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        OutputOptions.check(**kw)  # type: ignore[arg-type]


def test_defaults_keep_no_matte_and_options_do() -> None:
    assert OutputOptions.check().is_default and not OutputOptions.check().keeps_matte
    assert OutputOptions.check("WEBP").format is OutputFormat.WEBP
    assert OutputOptions.check(crop=0).keeps_matte


def test_webp_keeps_alpha_exactly() -> None:
    im, alpha = cutout()
    back = decode(encode_image(im, OutputFormat.WEBP))
    assert back.format == "WEBP" and back.mode == "RGBA"
    assert np.array_equal(np.asarray(back.getchannel("A")), alpha)


def test_avif_writes_alpha() -> None:
    if not avif_supported():
        pytest.skip("this Pillow cannot write AVIF")
    im, alpha = cutout()
    back = decode(encode_image(im, OutputFormat.AVIF))
    assert back.format == "AVIF" and back.mode == "RGBA"
    diff = np.abs(np.asarray(back.getchannel("A"), np.int16) - alpha.astype(np.int16))
    assert diff.mean() < 4  # lossy, but the same matte


def test_the_chain_crops_then_scales_then_flattens() -> None:
    im, alpha = cutout(200, 160, (40, 20, 120, 100))  # an 80×80 object
    opts = OutputOptions.check("png", max_size=50, background="#fff", crop=25)
    back = decode(finish_image(im, alpha, opts))
    # crop: 80 + 2 × 20 = 120 square (fits inside 200×160); then 120 → 50
    assert back.size == (50, 50) and back.mode == "RGB"
    assert back.getpixel((0, 0)) == (255, 255, 255)  # margin: transparent → the background
    r, g, b = back.getpixel((25, 25))
    assert r > 240 and g < 15 and b < 15  # the object, no green fringe


def test_an_empty_matte_is_not_cropped() -> None:
    im, alpha = cutout(64, 48, (0, 0, 0, 0))
    back = decode(finish_image(im, alpha, OutputOptions.check(crop=10)))
    assert back.size == (64, 48)
