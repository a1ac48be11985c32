import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.imaging import (
    ImageRejected,
    decode_alpha,
    decode_rgb,
    encode_png_alpha,
    encode_png_rgba,
    probe_image,
)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header claims a huge size (a pixel bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_pixel_bomb_is_rejected_from_the_header() -> None:
    with pytest.raises(ImageRejected, match="too large"):
        probe_image(_png_header_claiming(40000, 40000), max_pixels=100_000_000)


def test_truncated_image_is_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    with pytest.raises(ImageRejected):
        probe_image(buf.getvalue()[: len(buf.getvalue()) // 2], max_pixels=10**8)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.995])
def test_a_large_jpeg_checked_at_reduced_scale_still_fails_when_cut(keep: float) -> None:
    """`probe_image` decodes a JPEG at 1/8 scale (JPEG_CHECK_SCALE), which still reads every
    byte of the scan: a 1920×1080 photo-like JPEG cut anywhere is rejected as a full decode
    rejects it, and the whole file passes with its full size."""
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    whole = buf.getvalue()
    assert probe_image(whole, max_pixels=10**8) == (1920, 1080, "JPEG")
    with pytest.raises(ImageRejected, match="truncated"):
        probe_image(whole[: int(len(whole) * keep)], max_pixels=10**8)
    with Image.open(io.BytesIO(whole[: int(len(whole) * keep)])) as im, \
            pytest.raises(OSError):
        im.load()  # the full decode agrees


def test_not_an_image() -> None:
    with pytest.raises(ImageRejected, match="not a recognised image"):
        probe_image(b"hello world", max_pixels=10**8)


def test_rgba_roundtrip_keeps_size_and_alpha() -> None:
    rgb = np.full((30, 40, 3), 100, np.uint8)
    alpha = np.linspace(0, 1, 40, dtype=np.float32)[None, :].repeat(30, 0)
    data = encode_png_rgba(rgb, alpha)
    assert decode_rgb(data).shape == (30, 40, 3)
    back = decode_alpha(data)
    assert back.shape == (30, 40)
    assert np.abs(back - alpha).max() <= 1 / 255 + 1e-6
    assert np.abs(decode_alpha(encode_png_alpha(alpha)) - alpha).max() <= 1 / 255 + 1e-6


def _rows_filters(png: bytes) -> tuple[tuple[int, int, int, int], set[int]]:
    """(width, height, bit depth, colour type) and the filter byte of every row, read from
    the PNG's own chunks."""
    pos, idat, ihdr = 8, b"", b""
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = data
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    w, h, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    raw = zlib.decompress(idat)
    stride = 1 + w * {0: 1, 6: 4}[colour] * depth // 8
    assert len(raw) == h * stride
    return (w, h, depth, colour), {raw[i * stride] for i in range(h)}


def test_cutout_png_is_lossless_with_one_row_filter() -> None:
    # issue 14, point 2: every row filtered "up" (2), no per-row choice, and every pixel back
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (37, 53, 3), np.uint8)
    alpha = rng.random((37, 53), np.float32)
    data = encode_png_rgba(rgb, alpha)
    assert _rows_filters(data) == ((53, 37, 8, 6), {2})
    back = np.asarray(Image.open(io.BytesIO(data)))
    assert back.shape == (37, 53, 4)
    assert (back[..., :3] == rgb).all()
    assert (back[..., 3] == np.rint(alpha * 255)).all()
    grey = encode_png_alpha(alpha)
    assert _rows_filters(grey) == ((53, 37, 8, 0), {2})
    assert (np.asarray(Image.open(io.BytesIO(grey))) == np.rint(alpha * 255)).all()


# --- issue 14, point 2: a JPEG decoded only as large as a caller needs --------------------

def _jpeg(w: int, h: int, orientation: int = 1) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=2)
    im = Image.fromarray(rgb.astype(np.uint8))
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_fit_decodes_a_large_jpeg_at_the_scale_that_keeps_it() -> None:
    from shared.imaging import decode_image

    full = decode_image(_jpeg(1920, 1080))
    small = decode_image(_jpeg(1920, 1080), fit=lambda w, h: (w // 4, h // 4))
    assert full.full_hw is None and full.rgb.shape == (1080, 1920, 3)
    assert small.full_hw == (1080, 1920) and small.rgb.shape == (270, 480, 3)
    # the same picture, a quarter of the size: close to the full decode shrunk by 4
    shrunk = np.asarray(Image.fromarray(full.rgb).reduce(4), np.int16)
    assert np.abs(shrunk - small.rgb.astype(np.int16)).mean() < 3.0


def test_fit_keeps_at_least_what_is_asked_and_follows_orientation() -> None:
    from shared.imaging import decode_image

    # stored 1600×1200, EXIF 6: the user sees 1200×1600; the caller asks for 400×500 of that
    got = decode_image(_jpeg(1600, 1200, orientation=6), fit=lambda w, h: (400, 500))
    assert got.full_hw == (1600, 1200)
    h, w = got.rgb.shape[:2]
    assert (w, h) == (600, 800)  # 1/2: 1/4 would give 300×400, less than asked
    assert h > w  # turned, as the full decode is


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_fit_decodes_in_full_when_no_scale_helps(fmt: str) -> None:
    """A PNG has no cheaper scale; a JPEG whose half would be smaller than asked stays whole."""
    from shared.imaging import decode_image

    buf = io.BytesIO()
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(buf, fmt)
    got = decode_image(buf.getvalue(), fit=lambda w, h: (w // 4 if fmt == "PNG" else w - 1,
                                                         h // 4 if fmt == "PNG" else h - 1))
    assert got.full_hw is None and got.rgb.shape == (300, 400, 3)
