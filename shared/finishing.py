"""Output options of a job (`format`, `max_size`, `background`, `crop`): what a storefront
needs from a cut-out, applied by the matting worker after the engine.

Order: crop → max_size → background → encode. Pure functions on Pillow images, so the gateway
(checks), the worker (`matting_worker.stage`) and `mattepipe matte` share one definition:

* `crop`: the object's bounding box (alpha > `CROP_ALPHA_THRESHOLD`) plus a margin of `crop`
  percent of the box's own width/height on each side, clamped at the image's edges (no
  padding is invented). An empty matte (nothing above the threshold) is not cropped.
* `max_size`: the longest side is scaled down to it (Lanczos; Pillow premultiplies RGBA, so
  transparent pixels leave no fringe), never up.
* `background`: a colour composited under the cut-out; the result is RGB (no alpha channel:
  an opaque picture needs none, and it is smaller).
* `format`: PNG (lossless), WebP (colour lossy at quality `WEBP_QUALITY`, the alpha plane
  lossless, so edges are exact; a grey matte of output=alpha is written lossless), AVIF
  (quality `AVIF_QUALITY`, alpha included) via Pillow's own AVIF codec.

The full-size matte is what the comparison stage measures: a job with any non-default
option keeps it beside the cut-out as `<x>.alpha.png` (`OutputOptions.keeps_matte`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from PIL import Image, features

__all__ = [
    "AVIF_QUALITY",
    "CROP_ALPHA_THRESHOLD",
    "MAX_CROP_PERCENT",
    "MAX_SIZE_LIMIT",
    "MIN_MAX_SIZE",
    "OUTPUT_FORMATS",
    "WEBP_QUALITY",
    "OutputFormat",
    "OutputOptions",
    "apply_background",
    "avif_supported",
    "bounding_box",
    "crop_box",
    "crop_to_object",
    "encode_image",
    "finish_image",
    "parse_background",
    "resize_max",
]

MIN_MAX_SIZE = 16
"""Smallest `max_size`: below it a cut-out is a smudge, and a typo (`max_size=1`) is caught."""
MAX_SIZE_LIMIT = 16_383
"""Largest `max_size`: WebP's own size limit; larger asks are no-ops anyway (never upscaled)."""
MAX_CROP_PERCENT = 100.0
"""Largest crop margin, in percent of the object's box: enough for any framing."""
CROP_ALPHA_THRESHOLD = 8
"""Alpha (0-255) above which a pixel belongs to the object for `crop`: ignores the faint
haze a matting engine leaves in the background."""
WEBP_QUALITY = 90
"""WebP colour quality: visually lossless for product photos at a fraction of PNG's size."""
AVIF_QUALITY = 90
"""AVIF quality (Pillow's 0-100 scale), same reasoning as WebP."""


class OutputFormat(StrEnum):
    """The cut-out's file format (`format=`); its suffix is `.<value>`."""

    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"

    @property
    def suffix(self) -> str:
        return f".{self.value}"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat)
"""The formats as plain strings (argparse choices, messages)."""

_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
TRANSPARENT = "transparent"


def avif_supported() -> bool:
    """Whether this Pillow can write AVIF (Pillow ≥ 11.2 built with libavif)."""
    return bool(features.check("avif"))


def parse_background(value: str | None) -> str | None:
    """`#ffffff`, `ffffff`, `#fff` (any case) → `#ffffff`; None, '' or `transparent` → None;
    anything else is a ValueError whose message is shown to the user."""
    if value is None:
        return None
    v = value.strip()
    if v == "" or v.lower() == TRANSPARENT:
        return None
    m = _HEX.fullmatch(v)
    if m is None:
        raise ValueError(f"background must be a colour like #ffffff or #fff, or "
                         f"'transparent', not {value[:40]!r}")
    digits = m.group(1).lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return f"#{digits}"


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


@dataclass(frozen=True)
class OutputOptions:
    """A job's output options, checked (`check` raises ValueError with the user's reason)."""

    format: OutputFormat = OutputFormat.PNG
    max_size: int | None = None
    background: str | None = None
    """`#rrggbb`, or None: transparent."""
    crop: float | None = None
    """Margin in percent of the object's box; None: no crop."""

    @classmethod
    def check(cls, fmt: str | None = None, max_size: int | None = None,
              background: str | None = None, crop: float | None = None) -> OutputOptions:
        f = (fmt or OutputFormat.PNG.value).strip().lower()
        if f not in OUTPUT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of: {', '.join(OUTPUT_FORMATS)}")
        if f == OutputFormat.AVIF and not avif_supported():
            raise ValueError("format=avif: this server's Pillow cannot write AVIF")
        if max_size is not None and not MIN_MAX_SIZE <= max_size <= MAX_SIZE_LIMIT:
            raise ValueError(f"max_size must be between {MIN_MAX_SIZE} and {MAX_SIZE_LIMIT} "
                             f"pixels, not {max_size}")
        if crop is not None and not (0.0 <= crop <= MAX_CROP_PERCENT):  # also refuses NaN
            raise ValueError(f"crop must be a margin between 0 and {MAX_CROP_PERCENT:g} "
                             f"percent, not {crop}")
        return cls(OutputFormat(f), max_size, parse_background(background), crop)

    @property
    def is_default(self) -> bool:
        return self == OutputOptions()

    @property
    def keeps_matte(self) -> bool:
        """The cut-out is no longer the full-size matte (cropped, scaled, flattened or in a
        lossy format): the worker also writes `<x>.alpha.png` for the comparison stage."""
        return not self.is_default

    @property
    def suffix(self) -> str:
        return self.format.suffix

    def as_dict(self) -> dict[str, str | int | float | None]:
        return {"format": self.format.value, "max_size": self.max_size,
                "background": self.background, "crop": self.crop}


def bounding_box(alpha: npt.NDArray[np.uint8],
                 threshold: int = CROP_ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), right/bottom exclusive, of the pixels with alpha above
    `threshold`; None when there is none."""
    mask = alpha > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def crop_box(box: tuple[int, int, int, int], margin_percent: float, width: int,
             height: int) -> tuple[int, int, int, int]:
    """`box` grown by `margin_percent` of its own width (left and right) and height (top and
    bottom), rounded to whole pixels, clamped to the image."""
    left, top, right, bottom = box
    mx = round((right - left) * margin_percent / 100.0)
    my = round((bottom - top) * margin_percent / 100.0)
    return max(0, left - mx), max(0, top - my), min(width, right + mx), min(height, bottom + my)


def crop_to_object(im: Image.Image, alpha: npt.NDArray[np.uint8],
                   margin_percent: float) -> Image.Image:
    """`im` cropped to the object of `alpha` (same size) plus the margin; unchanged when the
    matte is empty."""
    box = bounding_box(alpha)
    if box is None:
        return im
    return im.crop(crop_box(box, margin_percent, im.width, im.height))


def resize_max(im: Image.Image, max_size: int) -> Image.Image:
    """Scaled down so its longest side is `max_size` (aspect kept), never up."""
    longest = max(im.size)
    if longest <= max_size:
        return im
    scale = max_size / longest
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def apply_background(im: Image.Image, colour: str) -> Image.Image:
    """An RGBA cut-out composited over `colour` (`#rrggbb`): an RGB image."""
    bg = Image.new("RGBA", im.size, (*_rgb(colour), 255))
    return Image.alpha_composite(bg, im.convert("RGBA")).convert("RGB")


def encode_image(im: Image.Image, fmt: OutputFormat) -> bytes:
    """`im` (RGBA, RGB or L) as `fmt` (see the module docstring for the settings)."""
    buf = io.BytesIO()
    if fmt is OutputFormat.PNG:
        im.save(buf, format="PNG", compress_level=1)
    elif fmt is OutputFormat.WEBP:
        if im.mode == "L":  # a matte: exact, like its PNG
            im.save(buf, format="WEBP", lossless=True)
        else:
            im.save(buf, format="WEBP", quality=WEBP_QUALITY, alpha_quality=100, method=4)
    else:
        im.save(buf, format="AVIF", quality=AVIF_QUALITY)
    return buf.getvalue()


def finish_image(im: Image.Image, alpha: npt.NDArray[np.uint8], opts: OutputOptions) -> bytes:
    """The whole chain on one cut-out (`im`: RGBA, or the L matte of output=alpha, at the
    size of `alpha`): crop → max_size → background → encode."""
    if opts.crop is not None:
        im = crop_to_object(im, alpha, opts.crop)
    if opts.max_size is not None:
        im = resize_max(im, opts.max_size)
    if opts.background is not None and im.mode == "RGBA":
        im = apply_background(im, opts.background)
    return encode_image(im, opts.format)
