"""A held-out quality set, generated: composites made the way `../shared/quality-set` is made
(an object with hard, soft or hairy edges, sometimes a semi-transparent part, pasted with its
exact alpha on a plain, gradient or textured background) but with other shapes and other
textures, so tuning on the 36 fixed files shows up as a gap between the two tables.

Image `i` of a set comes from the pair (seed, i), so a run is repeatable, a new seed is a new
set, and one image can be rebuilt alone. Backdrop textures are procedural (cellular pebbles,
fractal clouds, stripes, bricks); printed objects take crops of the sample photos the repo
ships; nothing is downloaded.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from shared.imaging import decode_rgb

__all__ = ["SHAPES", "TEXTURES", "Item", "generate", "item"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
SIZES = [(640, 480), (800, 600), (960, 720), (800, 480), (960, 600), (640, 720)]
BACKGROUNDS = ["plain", "gradient", "textured"]
EDGES = ["hard", "soft", "hair"]
SHAPES = ["star", "rounded_rect", "heart", "crescent", "polygon", "blobs", "bottle", "leaf"]
TEXTURES = ["pebbles", "fractal", "stripes", "bricks"]
SAMPLES = Path(__file__).resolve().parent.parent / "mattepipe" / "assets" / "samples"


def _fill(mask: U8) -> F32:
    return (mask > 0).astype(np.float32)


def _shape(kind: str, w: int, h: int, rng: np.random.Generator) -> F32:
    """A filled object mask, centred with some jitter, 25-55 % of the short side across."""
    m = np.zeros((h, w), np.uint8)
    cx = int(w / 2 + rng.uniform(-0.12, 0.12) * w)
    cy = int(h / 2 + rng.uniform(-0.1, 0.1) * h)
    r = int(min(w, h) * rng.uniform(0.22, 0.32))
    if kind == "star":
        n = int(rng.integers(5, 9))
        star = [(cx + (r if i % 2 == 0 else r * 0.5) * math.cos(math.pi * i / n),
                 cy + (r if i % 2 == 0 else r * 0.5) * math.sin(math.pi * i / n))
                for i in range(2 * n)]
        cv2.fillPoly(m, [np.array(star, np.int32)], 255)
    elif kind == "rounded_rect":
        rw, rh, c = int(r * 1.3), int(r * 0.8), int(r * 0.25)
        cv2.rectangle(m, (cx - rw + c, cy - rh), (cx + rw - c, cy + rh), 255, -1)
        cv2.rectangle(m, (cx - rw, cy - rh + c), (cx + rw, cy + rh - c), 255, -1)
        for dx in (-rw + c, rw - c):
            for dy in (-rh + c, rh - c):
                cv2.circle(m, (cx + dx, cy + dy), c, 255, -1)
    elif kind == "heart":
        t = np.linspace(0, 2 * np.pi, 400)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([cx + x * r / 17, cy + y * r / 17], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 255)
    elif kind == "crescent":
        cv2.circle(m, (cx, cy), r, 255, -1)
        cv2.circle(m, (cx + int(r * 0.55), cy - int(r * 0.2)), int(r * 0.85), 0, -1)
    elif kind == "polygon":
        k = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.6, 1.1, k)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 255)
    elif kind == "blobs":  # two separate objects: components must both survive
        for sx in (-1, 1):
            rr = int(r * rng.uniform(0.45, 0.65))
            cv2.ellipse(m, (cx + sx * int(r * 0.85), cy + int(rng.uniform(-0.3, 0.3) * r)),
                        (rr, int(rr * rng.uniform(0.6, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, 255, -1)
    elif kind == "bottle":
        bw, nw = int(r * 0.55), int(r * 0.2)
        cv2.rectangle(m, (cx - bw, cy - int(r * 0.3)), (cx + bw, cy + r), 255, -1)
        cv2.ellipse(m, (cx, cy - int(r * 0.3)), (bw, int(r * 0.3)), 0, 180, 360, 255, -1)
        cv2.rectangle(m, (cx - nw, cy - r), (cx + nw, cy - int(r * 0.5)), 255, -1)
    else:  # leaf: a lens with a stem and a hole
        cv2.ellipse(m, (cx, cy), (r, int(r * 0.5)), float(rng.uniform(-30, 30)), 0, 360, 255, -1)
        cv2.line(m, (cx - r, cy), (cx - int(r * 1.4), cy + int(r * 0.3)), 255, max(3, r // 15))
        cv2.circle(m, (cx + r // 3, cy), max(4, r // 6), 0, -1)
    return _fill(m)


def _inside(mask: F32, margin: int) -> F32:
    """Shift the object so it keeps `margin` pixels from every edge, as a studio shot does (an
    object cut by the frame is the cluttered path's case, not this set's)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    dx = max(margin - xs.min(), 0) - max(xs.max() - (w - 1 - margin), 0)
    dy = max(margin - ys.min(), 0) - max(ys.max() - (h - 1 - margin), 0)
    shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return np.asarray(cv2.warpAffine(mask, shift, (w, h), flags=cv2.INTER_NEAREST), np.float32)


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """(y, x) of the pixels on a mask's boundary, where strands and glass discs start."""
    grad = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return np.argwhere(grad > 0)


def _hair(base: F32, rng: np.random.Generator) -> F32:
    """Thin strands walking outward from the boundary, drawn antialiased at 4× and reduced, so
    their alpha is fractional like real hair."""
    h, w = base.shape
    s = 4
    big = np.zeros((h * s, w * s), np.uint8)
    edge = _outline(base > 0)
    ys, xs = np.nonzero(base)
    cy, cx = ys.mean(), xs.mean()
    for _ in range(int(rng.integers(20, 40))):
        y, x = edge[rng.integers(len(edge))].astype(float)
        ang = math.atan2(y - cy, x - cx) + rng.uniform(-0.6, 0.6)
        pts = []
        for _ in range(int(rng.integers(10, 30))):
            pts.append((x * s, y * s))
            ang += rng.normal(0, 0.18)
            x, y = x + 2.5 * math.cos(ang), y + 2.5 * math.sin(ang)
        cv2.polylines(big, [np.array(pts, np.int32)], False, 255, int(rng.integers(4, 7)),
                      cv2.LINE_AA)
    strands = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return np.maximum(base, np.clip(strands * 1.6, 0, 1))


def _texture(kind: str, w: int, h: int, rng: np.random.Generator) -> U8:
    """A grey, busy background: everything a border model must not mistake for an object."""
    if kind == "pebbles":
        n = int(w * h / 500)
        pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1).astype(np.float32)
        grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 2)
        dist, lab = cKDTree(pts).query(grid, k=2)
        shade = rng.uniform(60, 200, n)[lab[:, 0]]
        crack = dist[:, 1] - dist[:, 0]
        t = (shade * np.clip(crack / 4, 0.3, 1)).reshape(h, w)
    elif kind == "fractal":
        t = np.zeros((h, w), np.float64)
        for octave in range(1, 7):
            cells = rng.uniform(0, 1, (2**octave + 1, 2**octave + 1))
            t += cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC) / octave
        t = (t - t.min()) / (np.ptp(t) + 1e-9) * 200 + 30
    elif kind == "stripes":
        yy, xx = np.mgrid[0:h, 0:w]
        a = rng.uniform(0, np.pi)
        t = 128 + 70 * np.sin((xx * math.cos(a) + yy * math.sin(a)) / rng.uniform(4, 12))
        t += rng.normal(0, 18, (h, w))
    else:  # bricks
        t = np.full((h, w), 150.0)
        bh, bw = int(rng.integers(20, 36)), int(rng.integers(50, 90))
        for row in range(0, h, bh):
            off = (row // bh % 2) * bw // 2
            for col in range(-bw, w, bw):
                t[row:row + bh, max(col + off, 0):max(col + off + bw, 0)] = rng.uniform(90, 190)
            t[row:row + 3, :] = 60
            for col in range(off, w, bw):
                t[row:row + bh, col:col + 3] = 60
        t += rng.normal(0, 10, (h, w))
    return np.repeat(np.clip(t, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> F32:
    if kind == "plain":
        bg = np.ones((h, w, 3)) * rng.uniform(150, 255, 3)
    elif kind == "gradient":
        a, b = rng.uniform(120, 255, 3), rng.uniform(120, 255, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        ang = rng.uniform(0, 2 * np.pi)
        p = (xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang) + 0.5
        p = np.clip(p, 0, 1)[..., None]
        bg = a * (1 - p) + b * p
        vignette = 1 - 0.18 * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2)[..., None]
        bg = bg * vignette
    else:
        bg = _texture(TEXTURES[int(rng.integers(len(TEXTURES)))], w, h, rng).astype(np.float64)
    bg = bg + rng.normal(0, 2.0, bg.shape)
    return np.clip(bg, 0, 255).astype(np.float32)


def _foreground(w: int, h: int, bg: F32, rng: np.random.Generator) -> tuple[F32, str]:
    """A third of the objects carry a photo's texture (tiles of a crop, mirrored, as product
    prints do), the rest a flat colour with grain that a photographer would set off from the
    backdrop."""
    if rng.uniform() < 0.35:
        photos = sorted(SAMPLES.glob("*.jpg"))
        src = decode_rgb(photos[int(rng.integers(len(photos)))])
        ch, cw = src.shape[0] // 3, src.shape[1] // 3
        y0, x0 = int(rng.integers(src.shape[0] - ch)), int(rng.integers(src.shape[1] - cw))
        tile = src[y0:y0 + ch, x0:x0 + cw]
        tile = np.concatenate([tile, tile[:, ::-1]], 1)
        tile = np.concatenate([tile, tile[::-1]], 0)
        reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
        return np.tile(tile, reps)[:h, :w].astype(np.float32), "photo"
    backdrop = bg.reshape(-1, 3).mean(axis=0)
    base = rng.uniform(20, 230, 3)
    while np.linalg.norm(base - backdrop) < 90:
        base = rng.uniform(20, 230, 3)
    fg = base + rng.normal(0, 7.5, (h, w, 3))  # the quality set's objects: flat colour, grain
    return np.clip(fg, 0, 255).astype(np.float32), "solid"


def _glass(alpha: F32, rng: np.random.Generator) -> F32:
    """A semi-transparent part of the object's own material (a frosted rim, a lens) over part
    of its outline: alpha at a constant level inside a disc, the object's colour throughout."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    edge = _outline(alpha > 0.5)
    cy, cx = edge[int(rng.integers(len(edge)))]
    r = int(min(np.ptp(ys), np.ptp(xs)) * rng.uniform(0.18, 0.3)) + 3
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (r, int(r * rng.uniform(0.7, 1.0))),
                float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    out: F32 = np.maximum(alpha, m.astype(np.float32) / 255 * float(rng.uniform(0.35, 0.7)))
    return out


@dataclass
class Item:
    name: str
    image: U8
    """H×W×3 RGB composite."""
    gt: U8
    """H×W exact alpha, 0–255."""
    background: str
    edge: str
    glass: bool
    shape: str
    object: str
    """'solid' or 'photo': what the object's surface is."""


def item(seed: int, i: int) -> Item:
    """Composite number `i` of the set made from `seed`; each has its own generator, so any one
    can be rebuilt alone (a test, a bug report) without the others."""
    rng = np.random.default_rng([seed, i])
    glass = (i % 18) >= 9
    background = BACKGROUNDS[(i % 9) // 3]
    edge = EDGES[i % 3]
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    shape = SHAPES[i % len(SHAPES)]
    alpha = _shape(shape, w, h, rng)
    if edge == "soft":
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), float(rng.uniform(3, 9))), np.float32)
    elif edge == "hair":
        alpha = _hair(alpha, rng)
    if glass:
        alpha = _glass(alpha, rng)
    alpha = _inside(alpha, int(min(w, h) * 0.04))
    bg = _background(background, w, h, rng)
    fg, kind = _foreground(w, h, bg, rng)
    comp = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    name = f"ho_{i:03d}_{background}_{edge}{'_glass' if glass else ''}"
    return Item(name, np.clip(comp + 0.5, 0, 255).astype(np.uint8),
                np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8),
                background, edge, glass, shape, kind)


def generate(out: Path, seed: int = 7, count: int = 36) -> Path:
    """Write `images/`, `gt/` and `manifest.csv` (the quality set's columns, plus shape and
    object) under `out`: background × edge × glass in turn, like the quality set's 36."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        it = item(seed, i)
        # Hard edges stay lossless; soft and hairy ones go through JPEG, as the set's do.
        ext = "png" if it.edge == "hard" else "jpg"
        params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == "jpg" else []
        bgr = cv2.cvtColor(it.image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(out / "images" / f"{it.name}.{ext}"), bgr, params)
        cv2.imwrite(str(out / "gt" / f"{it.name}.png"), it.gt)
        h, w = it.gt.shape
        rows.append([it.name, f"images/{it.name}.{ext}", f"gt/{it.name}.png", it.background,
                     it.edge, int(it.glass), w, h, it.shape, it.object])
    with (out / "manifest.csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["name", "image", "gt", "background", "edge", "glass", "width", "height",
                     "shape", "object"])
        wr.writerows(rows)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("heldout-set")
    print(generate(target, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 7))
