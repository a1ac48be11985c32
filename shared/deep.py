"""16 bits per channel: read a deep PNG or TIFF at full depth, write a 16-bit RGBA PNG cut-out.

Pillow opens a 16-bit RGB PNG as 8-bit "RGB" (the low byte is gone) and turns 16-bit grey
into "L" by clipping everything above 255 to white, so OpenCV reads these files
(IMREAD_UNCHANGED keeps uint16) once Pillow has checked the header and the pixel limit.
Engines still see 8 bits (`to_u8`), the matte is computed as for any image, and the cut-out's
colour comes from the 16-bit data with the matte scaled to 16 bits: retouchers get back the
depth they sent. Pillow cannot write 16-bit RGBA either, hence `cv2.imencode`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = [
    "DEEP_FORMATS",
    "RGB16",
    "U16_MAX",
    "encode_png_rgba16",
    "is_deep",
    "orient",
    "orientation",
    "read_deep",
    "to_u8",
]

RGB16 = npt.NDArray[np.uint16]
"""H×W×3 uint16, RGB order, alpha already composited (as the 8-bit decode does)."""
U16_MAX = 65535
_U8_TO_U16 = 257
"""65535 / 255: 0xAB → 0xABAB, so 8-bit values map onto the 16-bit range end to end."""
DEEP_FORMATS = frozenset({"PNG", "TIFF"})
"""Containers whose 16-bit data we read and write back at 16 bits."""
_PNG_DEPTH_BYTE = 24
"""Signature (8), IHDR length and type (8), width and height (8): then the bit depth."""
_TIFF_BITS_PER_SAMPLE = 258
_ORIENTATION = 0x0112


def is_deep(im: Image.Image, head: bytes) -> bool:
    """True for a 16-bit PNG (IHDR bit depth; `head` is the file's first bytes) or TIFF."""
    if im.format == "PNG":
        return len(head) > _PNG_DEPTH_BYTE and head[_PNG_DEPTH_BYTE] == 16
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)
        values = bits if isinstance(bits, tuple) else (bits,)
        return bool(values) and all(b == 16 for b in values)
    return False


def orientation(im: Image.Image) -> int:
    """The EXIF orientation still to apply to OpenCV's pixels (1-8; 1 when absent or
    unreadable). A TIFF's is 1: libtiff applies it for both readers (Pillow reports the
    turned size, OpenCV returns turned pixels); a PNG's eXIf is left to us."""
    if im.format == "TIFF":
        return 1
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(arr: npt.NDArray[np.uint16], value: int) -> npt.NDArray[np.uint16]:
    """Apply EXIF orientation `value` as `PIL.ImageOps.exif_transpose` does."""
    turned: npt.NDArray[np.uint16]
    if value == 2:
        turned = arr[:, ::-1]
    elif value == 3:
        turned = arr[::-1, ::-1]
    elif value == 4:
        turned = arr[::-1]
    elif value == 5:
        turned = arr.swapaxes(0, 1)
    elif value == 6:
        turned = np.rot90(arr, k=-1)
    elif value == 7:
        turned = np.rot90(arr, k=2).swapaxes(0, 1)
    elif value == 8:
        turned = np.rot90(arr, k=1)
    else:
        turned = arr
    return np.ascontiguousarray(turned)


def _flatten(colour: npt.NDArray[np.uint16], alpha: npt.NDArray[np.uint16]) -> RGB16:
    """Composite onto white, the studio default (as the 8-bit decode does)."""
    a = alpha.astype(np.float32)[..., None] / U16_MAX
    out = colour.astype(np.float32) * a + U16_MAX * (1.0 - a)
    flat: RGB16 = np.clip(np.rint(out), 0, U16_MAX).astype(np.uint16)
    return flat


def read_deep(source: Path | bytes, value: int, size: tuple[int, int]) -> RGB16 | None:
    """The file's 16-bit pixels as RGB16, oriented; None when OpenCV does not give 16 bits
    of the size Pillow saw (the caller then decodes 8 bits as usual)."""
    import cv2  # here, not at the top: the gateway imports this module and stays light

    if isinstance(source, bytes):
        raw = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        raw = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.shape[:2] != (size[1], size[0]):
        return None
    arr: npt.NDArray[np.uint16] = raw.astype(np.uint16, copy=False)
    if arr.ndim == 2:
        rgb = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 2:
        rgb = _flatten(np.repeat(arr[..., :1], 3, axis=2), arr[..., 1])
    elif arr.shape[2] == 3:
        rgb = arr[..., ::-1]
    elif arr.shape[2] == 4:
        rgb = _flatten(arr[..., 2::-1], arr[..., 3])
    else:
        return None
    return orient(np.ascontiguousarray(rgb), value)


def to_u8(rgb16: RGB16) -> npt.NDArray[np.uint8]:
    """What the engines see: each value rounded to the nearest of the 256 levels."""
    out: npt.NDArray[np.uint8] = ((rgb16.astype(np.uint32) + 128) // _U8_TO_U16).astype(np.uint8)
    return out


def encode_png_rgba16(
    rgb16: RGB16,
    alpha: npt.NDArray[np.floating],
    foreground: npt.NDArray[np.uint8] | None = None,
    rgb8: npt.NDArray[np.uint8] | None = None,
) -> bytes:
    """16-bit RGBA PNG. An engine's 8-bit foreground estimate (its fringe correction) is
    applied as the difference from the 8-bit image it saw, so untouched pixels keep all 16
    bits and corrected ones get the correction."""
    import cv2  # see read_deep

    colour = rgb16.astype(np.int32)
    if foreground is not None and rgb8 is not None:
        colour += (foreground.astype(np.int32) - rgb8.astype(np.int32)) * _U8_TO_U16
    a16 = np.clip(np.rint(alpha.astype(np.float64) * U16_MAX), 0, U16_MAX)
    bgra = np.dstack([colour[..., 2], colour[..., 1], colour[..., 0], a16])
    ok, buf = cv2.imencode(".png", np.clip(bgra, 0, U16_MAX).astype(np.uint16),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV fails only without memory
        raise OSError("could not encode the 16-bit PNG")
    return bytes(buf)


