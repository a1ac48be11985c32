"""Inputs beyond JPEG and PNG, made in the tests: HEIC and AVIF written by the real encoders,
a Display P3 ICC profile built byte by byte, 16-bit PNGs with values no 8-bit file can hold."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pillow_heif import register_heif_opener

register_heif_opener()  # the writers below need it, whatever the code under test registers

__all__ = ["DISC", "avif_bytes", "disc_rgb", "display_p3_icc", "heic_bytes", "png16_bytes"]

DISC = (180, 90, 60)
"""The disc colour: as Display P3 it is more saturated than the same numbers in sRGB."""


def disc_rgb(w: int = 96, h: int = 64) -> npt.NDArray[np.uint8]:
    """A red disc on a pale backdrop: something the classical engine cuts out."""
    yy, xx = np.mgrid[0:h, 0:w]
    disc = np.hypot(xx - w / 2, yy - h / 2) < min(w, h) / 3
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[...] = (235, 235, 230)
    rgb[disc] = DISC
    return rgb


def heic_bytes(rgb: npt.NDArray[np.uint8], icc: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    Image.fromarray(rgb, "RGB").save(buf, format="HEIF", quality=95, **extra)
    return buf.getvalue()


def avif_bytes(rgb: npt.NDArray[np.uint8], icc: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    Image.fromarray(rgb, "RGB").save(buf, format="AVIF", quality=95, **extra)
    return buf.getvalue()


def png16_bytes(arr: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit PNG: H×W grey, or H×W×3 / H×W×4 in RGB(A) order."""
    if arr.ndim == 3:
        arr = arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] == 4 else arr[..., ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr.astype(np.uint16)))
    assert ok
    return bytes(buf)


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + _s15(x) + _s15(y) + _s15(z)


def _desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\x00"
    return (b"desc\x00\x00\x00\x00" + struct.pack(">I", len(ascii_)) + ascii_
            + b"\x00" * 8 + b"\x00\x00\x00" + b"\x00" * 67)


def display_p3_icc(description: str = "Display P3 (test)") -> bytes:
    """An ICC v2 matrix/TRC monitor profile with Display P3's primaries (D50-adapted) and a
    2.2 gamma: enough for LittleCMS, and unlike sRGB."""
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"
    tags = [
        (b"desc", _desc(description)),
        (b"cprt", b"text\x00\x00\x00\x00" + b"no copyright, test data\x00"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", _xyz(0.2919, 0.6922, 0.0419)),
        (b"bXYZ", _xyz(0.1572, 0.0666, 0.7841)),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        pad = body + b"\x00" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += pad
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\x00" * 4 + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp"
              + b"\x00" * 24 + struct.pack(">I", 0) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
              + b"\x00" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
