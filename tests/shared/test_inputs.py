"""HEIC/HEIF and AVIF read; ICC profiles carried or converted; 16 bits kept, never clipped.

Every file is made here with the real encoders (pillow-heif, Pillow's AVIF, OpenCV for 16-bit
PNG) and read back by the code the workers run: `decode_image` and `encode_cutout`.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageOps

from matting_worker.cutout import encode_cutout
from shared.deep import orient
from shared.icc import ColorManagement, with_icc
from shared.imaging import ImageRejected, decode_image, decode_rgb, probe_image
from tests.support.inputs import avif_bytes, disc_rgb, display_p3_icc, heic_bytes, png16_bytes

WRITERS = {"heic": heic_bytes, "avif": avif_bytes}
HALF = np.full((64, 96), 0.5, np.float32)
"""A matte for the encoder tests: any alpha will do, a constant one is easy to check."""


def _jpeg(rgb: npt.NDArray[np.uint8], icc: bytes | None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, **({"icc_profile": icc} if icc
                                                                   else {}))
    return buf.getvalue()


def _read16(png: bytes) -> npt.NDArray[np.uint16]:
    arr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert arr is not None and arr.dtype == np.uint16, "the cut-out is not 16-bit"
    return np.asarray(arr[..., [2, 1, 0, 3]], dtype=np.uint16)


@pytest.mark.parametrize("kind", WRITERS)
def test_heic_and_avif_are_images(kind: str) -> None:
    data = WRITERS[kind](disc_rgb())
    assert probe_image(data, 10_000) == (96, 64, {"heic": "HEIF", "avif": "AVIF"}[kind])
    rgb = decode_rgb(data)
    assert rgb.shape == (64, 96, 3)
    assert np.abs(rgb.astype(int) - disc_rgb().astype(int)).mean() < 6  # lossy, but the image


@pytest.mark.parametrize("kind", WRITERS)
def test_pixel_limit_is_checked_on_the_header_before_any_decoding(kind: str) -> None:
    data = WRITERS[kind](disc_rgb())
    limit = 96 * 64 - 1
    with pytest.raises(ImageRejected, match="too large: 96x64"):
        probe_image(data, limit)
    with pytest.raises(ImageRejected, match="too large: 96x64"):
        decode_image(data, limit)
    # The pixel data cut off: still refused for its size, so the size came from the header.
    cut = data[: len(data) - 200]
    with pytest.raises(ImageRejected, match="too large: 96x64"):
        probe_image(cut, limit)
    with pytest.raises(ImageRejected) as err:
        probe_image(cut, 10_000)
    assert "too large" not in str(err.value)


@pytest.mark.parametrize("make", [heic_bytes, avif_bytes, _jpeg])
def test_an_rgb_profile_is_embedded_in_the_cutout_byte_for_byte(make: object) -> None:
    icc = display_p3_icc()
    assert callable(make)
    data = make(disc_rgb(), icc)
    image = decode_image(data)
    assert image.icc == icc
    assert np.array_equal(image.rgb, decode_image(make(disc_rgb(), None)).rgb) or make is not _jpeg
    with Image.open(io.BytesIO(encode_cutout(image, HALF))) as cut:
        assert cut.info.get("icc_profile") == icc
        assert np.array_equal(np.asarray(cut.convert("RGB")), image.rgb)  # numbers untouched


def test_srgb_mode_converts_the_pixels_and_embeds_nothing() -> None:
    data = _jpeg(disc_rgb(), display_p3_icc())
    kept = decode_image(data, color=ColorManagement.KEEP)
    image = decode_image(data, color=ColorManagement.SRGB)
    assert image.icc is None
    centre = (32, 48)
    # P3 (180, 90, 60) is a stronger red than sRGB (180, 90, 60): converted, red goes up.
    assert int(image.rgb[centre][0]) > int(kept.rgb[centre][0]) + 5
    assert int(image.rgb[centre][2]) < int(kept.rgb[centre][2]) - 5
    with Image.open(io.BytesIO(encode_cutout(image, HALF))) as cut:
        assert "icc_profile" not in cut.info
        assert np.array_equal(np.asarray(cut.convert("RGB")), image.rgb)
    # The comparison sheet shows the image converted for a plain screen.
    assert np.array_equal(decode_rgb(data), image.rgb)


def test_an_unreadable_profile_is_dropped_not_copied_and_the_image_still_decodes() -> None:
    data = _jpeg(disc_rgb(), b"not an icc profile at all" * 10)
    image = decode_image(data)
    assert image.icc is None and image.rgb.shape == (64, 96, 3)


def test_sixteen_bit_grey_is_neither_clipped_nor_cut_to_eight_bits() -> None:
    values = np.array([0, 100, 300, 1000, 30000, 65535], np.uint16)
    grey = np.tile(values, (64, 16))
    data = png16_bytes(grey)
    image = decode_image(data)
    assert image.rgb16 is not None
    assert np.array_equal(image.rgb16[..., 0], grey)
    # What engines and comparison sheets see: scaled, not clipped at 255.
    expected8 = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(decode_rgb(data)[0, :6, 0], expected8)
    out = _read16(encode_cutout(image, HALF))
    assert out.shape == (64, 96, 4)
    assert np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)
    assert len(np.unique(out[0, :6, 0])) == 6  # 100, 300 and 1000 stay distinct
    assert set(np.unique(out[..., 3])) == {32768}  # the matte, scaled to 16 bits


def test_sixteen_bit_rgb_keeps_its_low_bytes_and_alpha_input_goes_on_white() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 65536, (64, 96, 3), dtype=np.uint16)
    out = _read16(encode_cutout(decode_image(png16_bytes(rgb)), HALF))
    assert np.array_equal(out[..., :3], rgb)
    rgba = np.dstack([rgb, np.zeros((64, 96), np.uint16)])
    rgba[0, 0, 3] = 65535
    flat = decode_image(png16_bytes(rgba)).rgb16
    assert flat is not None
    assert np.array_equal(flat[0, 0], rgb[0, 0]) and (flat[1:, 1:] == 65535).all()


def test_an_engine_foreground_is_applied_to_the_16_bit_colour() -> None:
    rgb = np.full((64, 96, 3), 4000, np.uint16)
    image = decode_image(png16_bytes(rgb))
    assert tuple(image.rgb[0, 0]) == (16, 16, 16)
    foreground = image.rgb.copy()
    foreground[0, 0] = (22, 16, 12)  # the engine pulled this pixel's colour apart
    out = _read16(encode_cutout(image, HALF, foreground))
    assert tuple(out[0, 0, :3]) == (4000 + 6 * 257, 4000, 4000 - 4 * 257)
    assert (out[1:, 1:, :3] == 4000).all()


@pytest.mark.parametrize("value", range(1, 9))
def test_16_bit_orientation_matches_pillows_exif_transpose(value: int) -> None:
    base = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    im = Image.fromarray(base, "L")
    im.getexif()[0x0112] = value
    expected = np.asarray(ImageOps.exif_transpose(im), dtype=np.uint16) * 1000
    assert np.array_equal(orient(base.astype(np.uint16) * 1000, value), expected)


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_a_rotated_16_bit_file_comes_out_upright(fmt: str) -> None:
    grey = np.tile(np.arange(96, dtype=np.uint16) * 600, (64, 1))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format=fmt, exif=exif)
    image = decode_image(buf.getvalue())
    assert image.rgb16 is not None and image.rgb16.shape == (96, 64, 3)
    assert np.array_equal(image.rgb16[..., 0], np.rot90(grey, k=-1))


def test_with_icc_only_takes_a_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        with_icc(b"\xff\xd8\xff\xe0 jpeg", b"icc")
    assert with_icc(b"anything", None) == b"anything"
