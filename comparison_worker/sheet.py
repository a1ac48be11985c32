"""The comparison sheet: one picture per input that shows at a glance whether a cut-out is good.

Layout: a header naming the columns, then per model a caption (name and metrics) over a row of
tiles: original | alpha | composite on a checkerboard | composite on a solid colour | error heat
map (only with ground truth). Tiles are scaled down to fit TILE_MAX_W × TILE_MAX_H, so a 6000 px
photo gives a sheet of bounded size; a small input keeps its own size, enlarged only until its
long side reaches TILE_MIN_SIDE (at most MAX_UPSCALE×), so the sheet of a 32 px icon costs what
its pixels do, not what a photo's would (a 100 000-icon job renders 100 000 of them).
Composites use the original colours with the matte, without foreground estimation: a fringe of
old background is exactly what they must show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from shared.formats import GT_KEYS, Metric

__all__ = [
    "CONFIDENCE_KEY",
    "MAX_UPSCALE",
    "MIN_SHEET_W",
    "SOLID_COLOURS",
    "TILE_MAX_H",
    "TILE_MAX_W",
    "TILE_MIN_SIDE",
    "SheetRow",
    "caption_lines",
    "heat_colours",
    "pick_solid_colour",
    "render_sheet",
    "tile_size",
]

TILE_MAX_H = 320
TILE_MAX_W = 480
MIN_SHEET_W = 360
MAX_UPSCALE = 4.0
TILE_MIN_SIDE = 64
"""A small input's tiles are enlarged until their long side reaches this (nearest neighbour,
at most MAX_UPSCALE×), never beyond: the sheet grows with the input up to the TILE_MAX caps."""
GAP = 6
BACKDROP = (32, 32, 36)
TEXT = (236, 236, 236)
DIM_TEXT = (170, 170, 178)

# Saturated colours that never occur as a studio backdrop; the one farthest from the image's
# own background wins, so a halo of that background stands out against it.
SOLID_COLOURS: dict[str, tuple[int, int, int]] = {
    "magenta": (255, 0, 255),
    "green": (0, 200, 0),
    "blue": (0, 60, 255),
    "orange": (255, 140, 0),
}

Alpha = npt.NDArray[np.floating]
_T = TypeVar("_T", bound=np.generic)
RGB = npt.NDArray[np.uint8]
SheetRow = tuple[str, Alpha, Mapping[str, float]]
"""(model name, alpha H×W in [0, 1], metrics to print in the caption)."""


_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=8)
def _font(size: int) -> _Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


# --- text, rendered once per (text, size) ------------------------------------------------------
# A 32 px icon's sheet is mostly text: its headers, the model's name and the metrics line took
# half of the comparison worker's time (issue 17). The headers and names repeat on every sheet
# of a job, so each text's coverage mask is rendered once and pasted with its colour: the same
# pixels `ImageDraw.text` draws (both blend the colour through the mask, `ImageFill2`).
TEXTS_CACHED = 1024
"""Rendered text masks (and measured widths) kept per worker: headers and model names hit;
the metrics lines, which differ per image, churn through the rest."""


@lru_cache(maxsize=TEXTS_CACHED)
def _text_length(text: str, size: int) -> float:
    """`ImageDraw.textlength` of `text` in the sheet's font of `size` px."""
    return float(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=_font(size)))


@lru_cache(maxsize=TEXTS_CACHED)
def _text_mask(text: str, size: int) -> tuple[Image.Image, int, int]:
    """The coverage mask of `text` drawn at (0, 0), and where its box starts (a glyph may
    start left of or above the origin)."""
    font = _font(size)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    x0, y0, x1, y1 = (int(v) for v in box)  # whole pixels for a font drawn at (0, 0)
    mask = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), text, font=font, fill=255)
    return mask, x0, y0


def _draw_text(canvas: Image.Image, xy: tuple[int, int], text: str, size: int,
               fill: tuple[int, int, int]) -> None:
    """`ImageDraw.text(xy, text, fill)` in the sheet's font of `size` px, from the cache."""
    mask, dx, dy = _text_mask(text, size)
    x, y = xy[0] + dx, xy[1] + dy
    canvas.paste(fill, (x, y, x + mask.width, y + mask.height), mask)


def tile_size(width: int, height: int) -> tuple[int, int]:
    """The size every tile of a sheet gets for an input of width × height."""
    scale = min(TILE_MAX_W / width, TILE_MAX_H / height,
                max(1.0, min(MAX_UPSCALE, TILE_MIN_SIDE / max(width, height))))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _whole_factor(hw: tuple[int, ...], size: tuple[int, int]) -> int | None:
    """k when `size` (width, height) is exactly k × the array's (h, w) on both axes, k ≥ 1:
    the tile of an input of 16–320 px (issue 17, point 2: a 32 px icon's tile is 2×)."""
    h, w = int(hw[0]), int(hw[1])
    k = size[0] // w
    return k if k >= 1 and size == (w * k, h * k) else None


def _repeat(x: npt.NDArray[_T], k: int) -> npt.NDArray[_T]:
    """Nearest-neighbour enlargement by the whole factor k: the pixels PIL's NEAREST gives
    (output pixel i reads input pixel ⌊(i + ½) / k⌋ = ⌊i / k⌋), without two image copies and
    their conversions (a tiny sheet's tiles cost more in those than in the pixels)."""
    if k == 1:
        return x
    return np.repeat(np.repeat(x, k, axis=0), k, axis=1)


def _resize_rgb(rgb: RGB, size: tuple[int, int]) -> RGB:
    k = _whole_factor(rgb.shape, size)
    if k is not None:  # the same size (PIL's resize is a copy) or a whole-factor NEAREST
        return _repeat(rgb, k)
    im = Image.fromarray(rgb, "RGB")
    if size[0] > im.width:
        return np.asarray(im.resize(size, Image.Resampling.NEAREST))
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


def _resize_float(x: Alpha, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    f32 = np.ascontiguousarray(x, dtype=np.float32)
    k = _whole_factor(f32.shape, size)
    if k is not None:  # as `_resize_rgb`: PIL's "F" NEAREST (or copy) gives these values
        return np.clip(_repeat(f32, k), 0.0, 1.0)
    im = Image.fromarray(f32, "F")
    up = size[0] > im.width
    resample = Image.Resampling.NEAREST if up else Image.Resampling.BOX
    return np.clip(np.asarray(im.resize(size, resample), dtype=np.float32), 0.0, 1.0)


def _max_pool(x: npt.NDArray[np.float32], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Shrink keeping peaks: a one-pixel error line must survive a 20× reduction."""
    h, w = x.shape
    k = int(min(w / size[0], h / size[1]))
    if k >= 2:
        ph, pw = -h % k, -w % k
        padded = np.pad(x, ((0, ph), (0, pw)))
        x = padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).max(axis=(1, 3))
    return _resize_float(x, size)


@lru_cache(maxsize=1)
def heat_colours() -> npt.NDArray[np.uint8]:
    """A 256-entry black → purple → red → yellow → white ramp (inferno-like, no matplotlib)."""
    stops = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    rgb = np.array(
        [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64
    )
    pos = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(pos, stops, rgb[:, c]) for c in range(3)], axis=1)
    return np.rint(lut).astype(np.uint8)


def _heat(err: npt.NDArray[np.float32]) -> RGB:
    # √ scale: a 5 % error is already a visible 22 % of the ramp.
    idx = np.rint(np.sqrt(np.clip(err, 0.0, 1.0)) * 255.0).astype(np.uint8)
    out: RGB = heat_colours()[idx]
    return out


@lru_cache(maxsize=64)
def _checkerboard(size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """The checkerboard backdrop of one tile size, made once (a job's tiles share a size);
    read-only, since every sheet of that size uses the same array."""
    w, h = size
    sq = max(6, min(w, h) // 16)
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // sq + xx // sq) % 2 == 0)[..., None]
    board = np.where(light, np.float32(235.0), np.float32(190.0)).astype(np.float32)
    board.flags.writeable = False
    return board


def pick_solid_colour(original: RGB, reference: Alpha | None) -> tuple[str, tuple[int, int, int]]:
    """The solid backdrop most unlike the image's background.

    The background colour is the mean where the reference matte says background (weighted by
    1 − α), or of the outer pixel ring when the matte has no background.
    """
    px = original.reshape(-1, 3).astype(np.float64)
    bg: npt.NDArray[np.float64] | None = None
    if reference is not None:
        weight = 1.0 - np.clip(reference.reshape(-1).astype(np.float64), 0.0, 1.0)
        if weight.sum() >= 1.0:
            bg = (px * weight[:, None]).sum(axis=0) / weight.sum()
    if bg is None:
        ring = np.concatenate([original[0], original[-1], original[:, 0], original[:, -1]])
        bg = ring.astype(np.float64).mean(axis=0)
    distances = {n: float(np.square(np.subtract(c, bg)).sum()) for n, c in SOLID_COLOURS.items()}
    name = max(distances, key=distances.__getitem__)
    return name, SOLID_COLOURS[name]


def _composite(rgb: RGB, alpha: npt.NDArray[np.float32], backdrop: npt.NDArray[np.float32],
               rgb_f: npt.NDArray[np.float32] | None = None) -> RGB:
    """`rgb` over `backdrop` through `alpha`; `rgb_f`: `rgb` as float32 where the caller has
    it already (a sheet row composites the same tile twice)."""
    a = alpha[..., None]
    out = (rgb.astype(np.float32) if rgb_f is None else rgb_f) * a + backdrop * (1.0 - a)
    result: RGB = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return result


CONFIDENCE_KEY = "confidence"
"""A caption's entry for the matting engine's confidence (not a metric the sheet computes)."""


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def caption_lines(name: str, metrics: Mapping[str, float]) -> list[list[str]]:
    """One model's caption as lines of chunks: name and error metrics, then the gt-free ones."""
    first = [name] + [
        f"{k.upper()} {_fmt(metrics[k])}" for k in GT_KEYS if k in metrics
    ]
    free = [
        f"{label} {metrics[k]:.1%}"
        for k, label in ((Metric.COVERAGE, "coverage"), (Metric.UNCERTAIN, "uncertain"),
                         (Metric.BORDER_ALPHA, "border alpha"))
        if k in metrics
    ]
    if CONFIDENCE_KEY in metrics:  # the matting engine's own confidence (issue 16)
        free.append(f"confidence {metrics[CONFIDENCE_KEY]:.2f}")
    return [first, free] if free else [first]


def _wrap(chunks: list[str], size: int, width: int) -> list[str]:
    """Greedy packing of chunks into lines no wider than width (narrow sheets of tall images)."""
    lines: list[str] = []
    for chunk in chunks:
        candidate = f"{lines[-1]}   {chunk}" if lines else chunk
        if lines and _text_length(candidate, size) <= width:
            lines[-1] = candidate
        else:
            lines.append(chunk)
    return lines


def _fit(labels: Sequence[str], size: int, width: int) -> str:
    """The first label that fits the tile width, else the last (shortest) one."""
    for label in labels:
        if _text_length(label, size) <= width:
            return label
    return labels[-1]


def render_sheet(original: RGB, rows: Sequence[SheetRow], gt: Alpha | None = None,
                 size: tuple[int, int] | None = None) -> RGB:
    """The sheet as H×W×3 uint8; one row per model, the heat-map column only with ground truth.

    `size`: the image's (height, width) when `original` is a reduced decode of it (at least
    a tile's size); the tiles are those of the image's own size either way."""
    if not rows:
        raise ValueError("a comparison sheet needs at least one matte")
    h, w = size or original.shape[:2]
    tw, th = tile_size(w, h)
    n_cols = 5 if gt is not None else 4
    sheet_w = max(n_cols * tw + (n_cols + 1) * GAP, MIN_SHEET_W)
    font_px = int(np.clip(th // 13, 13, 24))
    small_px = max(12, font_px - 4)
    line_h = font_px + 6
    text_w = sheet_w - 2 * GAP

    orig_t = _resize_rgb(original, (tw, th))
    reference = gt if gt is not None else rows[0][1]
    # Decided on the tile, not the full image: the same answer at 1/100 of the cost for 24 MP.
    reference_t = _resize_float(reference, (tw, th))
    colour_name, colour = pick_solid_colour(orig_t, reference_t)
    header_options = [
        ["original", "image"],
        ["alpha", "a"],
        ["on checkerboard", "checker", "chk"],
        [f"on {colour_name}", colour_name, colour_name[:3]],
    ]
    if gt is not None:
        header_options.append(["error |a-g| (sqrt scale)", "error |a-g|", "error", "err"])
    headers = [_fit(opts, small_px, tw) for opts in header_options]

    checker = _checkerboard((tw, th))
    solid = np.broadcast_to(np.asarray(colour, np.float32), (th, tw, 3))
    captions = [
        [
            (line, i == 0)
            for i, chunks in enumerate(caption_lines(name, m))
            for line in _wrap(chunks, font_px if i == 0 else small_px, text_w)
        ]
        for name, _, m in rows
    ]
    header_h = line_h + GAP
    row_hs = [len(c) * line_h + GAP + th + GAP for c in captions]
    canvas = Image.new("RGB", (sheet_w, header_h + sum(row_hs)), BACKDROP)
    for c, label in enumerate(headers):
        _draw_text(canvas, (GAP + c * (tw + GAP), GAP // 2), label, small_px, DIM_TEXT)
    y = header_h
    for lines in captions:
        for i, (line, main) in enumerate(lines):
            _draw_text(canvas, (GAP, y + i * line_h), line, font_px if main else small_px,
                       TEXT if main else DIM_TEXT)
        y += len(lines) * line_h + GAP + th + GAP

    # The text is PIL's; the tiles go into the sheet's array directly (the same pixels as a
    # paste of each tile, without an image and a conversion per tile: issue 17, point 2).
    sheet = np.array(canvas, dtype=np.uint8)
    orig_f = orig_t.astype(np.float32)
    y = header_h
    for (_, alpha, _), lines, row_h in zip(rows, captions, row_hs, strict=True):
        ty = y + len(lines) * line_h + GAP
        a_t = reference_t if alpha is reference else _resize_float(alpha, (tw, th))
        tiles = [
            orig_t,
            np.rint(a_t * 255.0).astype(np.uint8)[..., None],  # grey: broadcast to RGB
            _composite(orig_t, a_t, checker, orig_f),
            _composite(orig_t, a_t, solid, orig_f),
        ]
        if gt is not None:
            err = np.abs(alpha.astype(np.float32) - gt.astype(np.float32))
            tiles.append(_heat(_max_pool(err, (tw, th))))
        for c, tile in enumerate(tiles):
            x = GAP + c * (tw + GAP)
            sheet[ty:ty + th, x:x + tw] = tile
        y += row_h
    return sheet
