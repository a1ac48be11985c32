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
