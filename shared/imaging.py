"""Decode and encode images safely: the pixel-bomb guard lives here, before any pixel is read."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.deep import RGB16, is_deep, orientation, read_deep, to_u8
from shared.errors import InputRejected
from shared.icc import ColorManagement, profile_space, to_srgb
from shared.image_plugins import PLUGIN_FORMATS, register_plugins

__all__ = [
    "ALLOWED_FORMATS",
    "PNG_COMPRESSION",
    "DecodedImage",
    "ImageRejected",
    "decode_alpha",
    "decode_image",
    "decode_rgb",
    "encode_jpeg",
    "encode_png_alpha",
    "encode_png_rgba",
    "probe_image",
]

register_plugins()
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF"}) | PLUGIN_FORMATS

# Our own limit is checked explicitly below; PIL's global guard must not fire first with a
# warning or a different message.
Image.MAX_IMAGE_PIXELS = None


class ImageRejected(InputRejected, ValueError):
    """The file is not an image we take; the message is the reason shown to the user."""


JPEG_CHECK_SCALE = 8
"""`probe_image` decodes a JPEG at 1/JPEG_CHECK_SCALE of its size (libjpeg's smallest DCT
scale): every byte is still read and entropy-decoded."""


def _open(source: Path | bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError as exc:
        raise ImageRejected("not a recognised image file") from exc
    except OSError as exc:
        raise ImageRejected(f"cannot read image: {exc}") from exc


def probe_image(source: Path | bytes, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, format) from the header only, then a full decode check.

    The size is checked before decoding so a 40000×40000 PNG of a few KB costs nothing.
    A JPEG is checked at 1/8 scale (`draft`): libjpeg still reads and entropy-decodes every
    byte of the scan, so truncation and corrupt data fail as in a full decode, but skips the
    full-size IDCT and colour conversion — ~1/3 of the CPU (issue 14: the ingest of a job's
    upload is the first moment of every job, with the engine idle).
    """
    with _open(source) as im:
        fmt = im.format or ""
        if fmt not in ALLOWED_FORMATS:
            raise ImageRejected(f"unsupported image format {fmt or 'unknown'}")
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageRejected("image has no pixels")
        if w * h > max_pixels:
            raise ImageRejected(f"image too large: {w}x{h} pixels (limit {max_pixels})")
        try:
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, w // JPEG_CHECK_SCALE), max(1, h // JPEG_CHECK_SCALE)))
            im.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    return w, h, fmt


@dataclass(frozen=True)
class DecodedImage:
    """One input as the matting stage needs it, from decode to the cut-out's encoder."""

    rgb: npt.NDArray[np.uint8]
    """H×W×3 uint8, oriented, transparency on white: what the engines see."""
    icc: bytes | None = None
    """The RGB profile the cut-out embeds (`COLOR_MANAGEMENT=keep`); None: plain sRGB."""
    rgb16: RGB16 | None = None
    """The same pixels at 16 bits when the input had them; the cut-out is then 16-bit."""
    full_hw: tuple[int, int] | None = None
    """(height, width) of the image itself when `decode_image`'s `fit` let a JPEG decode
    smaller (`rgb` is then the reduced copy); None when `rgb` is the image at its size."""


_I16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_HEAD_BYTES = 32
"""Enough of the file for the PNG bit depth (`shared.deep.is_deep`)."""


def _head(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:_HEAD_BYTES]
    with source.open("rb") as f:
        return f.read(_HEAD_BYTES)


def _grey16_to_l(im: Image.Image) -> Image.Image:
    """16-bit grey → "L" by scaling (Pillow's own conversion clips everything above 255)."""
    arr = np.clip(np.asarray(im, dtype=np.uint32), 0, 65535)
    return Image.fromarray(((arr + 128) // 257).astype(np.uint8), "L")


def _rgb8(im: Image.Image) -> npt.NDArray[np.uint8]:
    if im.mode in _I16_MODES:
        im = _grey16_to_l(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        # Transparent pixels composite onto white, the studio default.
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _draft(im: Image.Image, fit: Callable[[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    """Let a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8: Pillow's draft) that keeps
    `fit(width, height)` of the oriented image; the oriented (height, width) when it did, None
    when the file decodes at its size (not a JPEG, or no scale small enough helps)."""
    if im.format != "JPEG":
        return None
    w, h = im.size
    turned = orientation(im) in (5, 6, 7, 8)
    ow, oh = (h, w) if turned else (w, h)
    nw, nh = fit(ow, oh)
    if 2 * nw > ow or 2 * nh > oh:
        return None
    im.draft(im.mode, (nh, nw) if turned else (nw, nh))
    return (oh, ow) if im.size != (w, h) else None


def decode_image(
    source: Path | bytes,
    max_pixels: int = 200_000_000,
    color: ColorManagement = ColorManagement.KEEP,
    fit: Callable[[int, int], tuple[int, int]] | None = None,
) -> DecodedImage:
    """Decode for matting: EXIF orientation applied (what the user sees is what gets matted),
    the ICC profile kept or converted per `color` (`shared.icc`), 16 bits kept where the
    input had them (`shared.deep`). The pixel limit is checked on the header first.

    `fit(width, height)` → the (width, height) the caller needs at least (a comparison
    sheet's tile): a JPEG then decodes at the smallest DCT scale that keeps it, a fraction of
    the full decode's cost, and `full_hw` says the image's own size; others decode in full."""
    with _open(source) as im:
        w, h = im.size
        if w * h > max_pixels:
            raise ImageRejected(f"image too large: {w}x{h} pixels (limit {max_pixels})")
        try:
            icc = im.info.get("icc_profile") or None
            space = profile_space(icc) if icc else None
            keep = icc if color == ColorManagement.KEEP and space == "RGB" else None
            convert = icc is not None and space is not None and keep is None
            if not convert and is_deep(im, _head(source)):
                rgb16 = read_deep(source, orientation(im), (w, h))
                if rgb16 is not None:
                    return DecodedImage(to_u8(rgb16), keep, rgb16)
            full_hw = _draft(im, fit) if fit is not None else None
            im = ImageOps.exif_transpose(im)
            if im.mode in _I16_MODES:
                im = _grey16_to_l(im)
            if convert and icc is not None:
                converted = to_srgb(im, icc)
                im = converted if converted is not None else im
            arr = _rgb8(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from exc
    return DecodedImage(arr, keep, full_hw=full_hw)


def decode_rgb(source: Path | bytes, max_pixels: int = 200_000_000) -> npt.NDArray[np.uint8]:
    """H×W×3 uint8 for display and measuring (comparison sheets, benches): EXIF orientation
    applied, an embedded profile converted to sRGB, 16-bit input rounded to 8 bits."""
    return decode_image(source, max_pixels, ColorManagement.SRGB).rgb


def decode_alpha(source: Path | bytes) -> npt.NDArray[np.float32]:
    """A matte file → H×W float32 in [0, 1]: the alpha channel if present, else luminance."""
    with _open(source) as im:
        try:
            if im.mode in ("RGBA", "LA", "PA"):
                band = im.getchannel("A")
            elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr16 = np.asarray(im, dtype=np.float32)
                scaled: npt.NDArray[np.float32] = np.clip(arr16 / 65535.0, 0.0, 1.0)
                return scaled.astype(np.float32)
            else:
                band = im.convert("L")
            arr = np.asarray(band, dtype=np.float32) / np.float32(255.0)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"corrupt or truncated matte: {exc}") from exc
    return arr.astype(np.float32, copy=False)  # already float32: no second copy


def _to_u8(alpha: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    out: npt.NDArray[np.uint8] = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return out


# --- PNG: lossless, and fast to write and to read back (issue 14, point 2) -----------------
# Pillow filters every row five ways and keeps the best (adaptive filtering): most of a cut-out's
# encode (39 ms of a 1920×1080 studio RGBA at zlib level 1) and a slower decode. One fixed
# filter, "up" (each row minus the one above: smooth photos and flat mattes alike), writes the
# same pixels in 16 ms and decodes in ~3/5 of the time; files are the same size for studio
# shots and −4 to +7 % for busy photos (bench/png_encode.py, BENCHMARKS.md "PNG encode of the
# cut-out").
PNG_COMPRESSION = 1
"""zlib level of every PNG the workers write (cut-outs and mattes): speed over size."""


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """H×W (grey) or H×W×4 (BGRA, OpenCV's order) 8-bit pixels → PNG bytes, one fixed row
    filter ("up")."""
    import cv2  # here, not at the top: the gateway imports this module and stays light

    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION,
                                            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])
    if not ok:  # pragma: no cover - OpenCV fails only without memory
        raise OSError("could not encode the PNG")
    return bytes(buf)


def encode_png_rgba(
    rgb: npt.NDArray[np.uint8],
    alpha: npt.NDArray[np.floating],
    foreground: npt.NDArray[np.uint8] | None = None,
) -> bytes:
    """RGBA PNG; with an estimated foreground the colour carries no background fringe."""
    colour = rgb if foreground is None else foreground
    bgra = np.dstack([colour[..., 2], colour[..., 1], colour[..., 0], _to_u8(alpha)])
    return _png(bgra)


def encode_png_alpha(alpha: npt.NDArray[np.floating]) -> bytes:
    return _png(_to_u8(alpha))


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 88) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()
