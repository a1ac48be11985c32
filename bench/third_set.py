"""A third quality set, built independently of the team's set and of `bench.heldout`.

Both earlier generators paste a flat-ish object on a backdrop made by the same code family, so
an engine tuned on them can fit their habits. This one makes other images on purpose, and
labels every image with one *kind*, reported separately:

- `plain`, `gradient`: ordinary studio shots, the backdrop lit with a real falloff (an
  inverse-square spot plus a sweep), the object shaded by a light from one side;
- `low_contrast`: white on white, beige on a cream-to-green sweep, grey on grey;
- `glass`: an object with a see-through panel (alpha 0.25–0.7), on a plain or graded backdrop;
- `shadow`: a soft contact shadow under the object — background by default, so the truth
  has alpha 0 there;
- `touching`: the object runs off the bottom or a side of the frame;
- `photo_backdrop`: a studio object on a blurred crop of a real photo (the bundled samples);
- `cluttered`: an object in a sharp crop of a real photo — the case that looks like an
  ordinary photograph, where the weight-free engine is expected to struggle and its
  confidence must say so.

Shapes are not the other generators': superellipses, capsules, mugs with a handle hole,
Fourier blobs and lamp silhouettes, drawn at 4× and reduced (real anti-aliasing), some
defocused. Every image is saved as JPEG at one of several qualities or PNG, with sensor
noise, so the engine sees the artefacts real files have. Image `i` of a set is a pure
function of (seed, i). Nothing is downloaded.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from shared.imaging import decode_rgb

__all__ = ["KINDS", "PHOTO_KINDS", "STUDIO_KINDS", "ThirdItem", "generate", "item"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
KINDS = ["plain", "gradient", "low_contrast", "glass", "shadow", "touching",
         "photo_backdrop", "cluttered"]
STUDIO_KINDS = ("plain", "gradient", "low_contrast", "glass", "shadow", "touching")
"""Kinds shot on a plain or graded backdrop: the issue's ≤ 0.003 target applies to them."""
PHOTO_KINDS = ("photo_backdrop", "cluttered")
"""The photo-like kinds: an object on a photograph, or in a cluttered scene."""
SHAPES = ["superellipse", "capsule", "mug", "fourier", "lamp"]
SIZES = [(640, 480), (720, 540), (600, 600), (800, 520)]
QUALITIES = [60, 75, 90, 0]
"""JPEG qualities; 0 = PNG."""
SAMPLES = Path(__file__).resolve().parent.parent / "mattepipe" / "assets" / "samples"
SS = 4
"""Supersampling factor of the drawn masks."""


@dataclass
class ThirdItem:
    name: str
    kind: str
    shape: str
    image: U8
    """H×W×3 RGB."""
    gt: U8
    """H×W alpha, 0–255."""
    quality: int


def _samples() -> list[U8]:
    return [decode_rgb(p) for p in sorted(SAMPLES.glob("*.jpg"))]


def _mask(kind: str, w: int, h: int, rng: np.random.Generator, touch: str | None) -> F32:
    """Object coverage in [0, 1], drawn at SS× and area-reduced."""
    W, H = w * SS, h * SS
    m = np.zeros((H, W), np.uint8)
    r = min(W, H) * rng.uniform(0.2, 0.3)
    cx, cy = W / 2 + rng.uniform(-0.1, 0.1) * W, H / 2 + rng.uniform(-0.08, 0.08) * H
    if touch == "bottom":
        cy = H - r * 0.6
    elif touch == "side":
        cx = W - r * 0.5
    t = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    if kind == "superellipse":
        n = rng.uniform(2.5, 5.0)
        a, b = r * rng.uniform(0.8, 1.3), r * rng.uniform(0.6, 1.0)
        ct, st = np.cos(t), np.sin(t)
        xs = cx + a * np.sign(ct) * np.abs(ct) ** (2 / n)
        ys = cy + b * np.sign(st) * np.abs(st) ** (2 / n)
        cv2.fillPoly(m, [np.stack([xs, ys], 1).astype(np.int32)], 255)
    elif kind == "capsule":
        ang = rng.uniform(0, math.pi)
        half, crad = r * 0.9, r * 0.35
        p0 = (int(cx - half * math.cos(ang)), int(cy - half * math.sin(ang)))
        p1 = (int(cx + half * math.cos(ang)), int(cy + half * math.sin(ang)))
        cv2.line(m, p0, p1, 255, int(2 * crad))
        cv2.circle(m, p0, int(crad), 255, -1)
        cv2.circle(m, p1, int(crad), 255, -1)
    elif kind == "mug":
        bw, bh = int(r * 0.7), int(r * 0.9)
        cv2.rectangle(m, (int(cx - bw), int(cy - bh)), (int(cx + bw), int(cy + bh)), 255, -1)
        hc = (int(cx + bw), int(cy))
        cv2.ellipse(m, hc, (int(r * 0.45), int(r * 0.5)), 0, -90, 90, 255, int(r * 0.16))
    elif kind == "fourier":
        rad = np.ones_like(t)
        for k in range(2, 6):
            rad += rng.uniform(-0.12, 0.12) * np.cos(k * t + rng.uniform(0, 6.28))
        xs, ys = cx + r * rad * np.cos(t), cy + r * rad * np.sin(t)
        cv2.fillPoly(m, [np.stack([xs, ys], 1).astype(np.int32)], 255)
    else:  # lamp: a shade on a stem on a base
        sw, sh = r * 0.8, r * 0.6
        top = cy - r
        shade = np.array([[cx - sw * 0.5, top], [cx + sw * 0.5, top],
                          [cx + sw, top + sh], [cx - sw, top + sh]], np.int32)
        cv2.fillPoly(m, [shade], 255)
        cv2.rectangle(m, (int(cx - r * 0.05), int(top + sh)), (int(cx + r * 0.05), int(cy + r)),
                      255, -1)
        cv2.ellipse(m, (int(cx), int(cy + r)), (int(r * 0.5), int(r * 0.12)), 0, 0, 360, 255, -1)
    small = cv2.resize(m.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0, 1).astype(np.float32)


def _falloff(w: int, h: int, rng: np.random.Generator, strength: float) -> F32:
    """Light on a sweep: an inverse-square spot above the frame plus a top-to-bottom fall."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lx, ly, lz = rng.uniform(0.2, 0.8) * w, -rng.uniform(0.1, 0.5) * h, rng.uniform(0.6, 1.2) * h
    d2 = ((xx - lx) ** 2 + (yy - ly) ** 2 + lz**2) / (lz**2)
    spot = 1.0 / d2
    spot = spot / spot.max()
    out: F32 = (1.0 - strength + strength * spot).astype(np.float32)
    return out


def _backdrop(kind: str, w: int, h: int, rng: np.random.Generator, photos: list[U8],
              colours: tuple[F32, F32] | None = None) -> F32:
    if kind in ("photo_backdrop", "cluttered"):
        p = photos[int(rng.integers(len(photos)))]
        ph, pw = p.shape[:2]
        s = max(w / pw, h / ph) * rng.uniform(1.0, 1.6)
        big = cv2.resize(p, (math.ceil(pw * s), math.ceil(ph * s)), interpolation=cv2.INTER_AREA)
        y0 = int(rng.integers(0, big.shape[0] - h + 1))
        x0 = int(rng.integers(0, big.shape[1] - w + 1))
        crop = big[y0:y0 + h, x0:x0 + w].astype(np.float32)
        if kind == "photo_backdrop":
            crop = np.asarray(cv2.GaussianBlur(crop, (0, 0), rng.uniform(4, 9)), np.float32)
        return crop
    c0, c1 = colours if colours else (rng.uniform(150, 245, 3).astype(np.float32),
                                      rng.uniform(120, 240, 3).astype(np.float32))
    light = _falloff(w, h, rng, rng.uniform(0.1, 0.35))[..., None]
    if kind == "plain":
        base = np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
    else:
        ang = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u = (xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang)
        u = ((u - u.min()) / max(float(u.max() - u.min()), 1e-6))[..., None]
        base = (c0 * (1 - u) + c1 * u).astype(np.float32)
    out: F32 = (base * light).astype(np.float32)
    return out


def _object_colours(w: int, h: int, base: F32, rng: np.random.Generator,
                    photos: list[U8], textured: bool) -> F32:
    """The object's colours: a base colour shaded by a side light, or a photo crop."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + 0.18 * ((xx / w - 0.5) * math.cos(ang) + (yy / h - 0.5) * math.sin(ang))
    if textured:
        p = photos[int(rng.integers(len(photos)))]
        tex = cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        col = tex
    else:
        col = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    out: F32 = np.clip(col * shade[..., None], 0, 255).astype(np.float32)
    return out


def item(seed: int, i: int, photos: list[U8] | None = None) -> ThirdItem:
    """Image `i` of the set for `seed` (kinds cycle, so every kind appears evenly)."""
    photos = photos if photos is not None else _samples()
    rng = np.random.default_rng([seed, i, 3])
    kind = KINDS[i % len(KINDS)]
    shape = SHAPES[(i // len(KINDS)) % len(SHAPES)]
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    touch = None
    if kind == "touching":
        touch = "bottom" if rng.random() < 0.5 else "side"
    alpha = _mask(shape, w, h, rng, touch)
    if rng.random() < 0.35:  # defocus: a soft edge
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), rng.uniform(1.0, 2.5)), np.float32)
    colours = None
    obj = rng.uniform(20, 230, 3).astype(np.float32)
    if kind == "low_contrast":
        pick = int(rng.integers(3))
        if pick == 0:  # white on white
            colours = (np.array([244, 244, 242], np.float32), np.array([236, 236, 236], np.float32))
            obj = np.array([228, 229, 232], np.float32)
        elif pick == 1:  # beige on a cream-to-green sweep
            colours = (np.array([240, 228, 200], np.float32), np.array([196, 214, 178], np.float32))
            obj = np.array([216, 196, 160], np.float32)
        else:  # grey on grey
            g = rng.uniform(110, 160)
            colours = (np.full(3, g, np.float32), np.full(3, g - 12, np.float32))
            obj = np.full(3, g - 26, np.float32)
    bg_kind = kind if kind in ("plain", "gradient", "photo_backdrop", "cluttered") else (
        "gradient" if rng.random() < 0.6 else "plain")
    bg = _backdrop(bg_kind, w, h, rng, photos, colours)
    textured = kind in ("photo_backdrop", "cluttered") or rng.random() < 0.3
    fg = _object_colours(w, h, obj, rng, photos, textured and kind != "low_contrast")
    if kind == "glass":
        ys, xs = np.nonzero(alpha > 0.99)
        if len(ys):
            y0, y1 = np.percentile(ys, [30, 70]).astype(int)
            x0, x1 = np.percentile(xs, [25, 75]).astype(int)
            panel = np.zeros_like(alpha)
            panel[y0:y1, x0:x1] = 1.0
            panel = np.asarray(cv2.GaussianBlur(panel, (0, 0), 1.0), np.float32)
            level = rng.uniform(0.25, 0.7)
            alpha = alpha * (1 - panel * (1 - level))
            tint = rng.uniform(150, 250, 3).astype(np.float32)
            fg = (fg * (1 - panel[..., None]) + panel[..., None] * tint).astype(np.float32)
    if kind == "shadow":
        ys, xs = np.nonzero(alpha > 0.5)
        if len(ys):
            yb = int(ys.max())
            cxo = float(xs.mean())
            wide = float(xs.max() - xs.min()) * 0.6
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            sh = np.exp(-(((xx - cxo) / max(wide, 4)) ** 2 + ((yy - yb) / (0.05 * h)) ** 2))
            bg = bg * (1 - rng.uniform(0.25, 0.45) * sh[..., None]).astype(np.float32)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    img = img + rng.normal(0, rng.uniform(0.5, 3.0), img.shape)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    quality = QUALITIES[int(rng.integers(len(QUALITIES)))]
    if quality:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            bgr = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
    gt = np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)
    return ThirdItem(f"t3_{i:03d}_{kind}_{shape}", kind, shape, rgb, gt, quality)


def generate(out: Path, seed: int = 11, count: int = 40,
             kinds: Sequence[str] | None = None) -> Path:
    """Write `images/` (PNG, already carrying its JPEG artefacts), `gt/` and `manifest.csv`
    (name, image, gt, kind, shape, jpeg quality, width, height) of images 0 … count − 1, or
    of those among them whose kind is in `kinds` (`PHOTO_KINDS`: a photo-like set)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(parents=True, exist_ok=True)
    photos = _samples()
    rows = []
    for i in range(count):
        if kinds is not None and KINDS[i % len(KINDS)] not in kinds:
            continue
        it = item(seed, i, photos)
        cv2.imwrite(str(out / "images" / f"{it.name}.png"), cv2.cvtColor(it.image,
                                                                          cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / "gt" / f"{it.name}.png"), it.gt)
        rows.append([it.name, f"images/{it.name}.png", f"gt/{it.name}.png", it.kind, it.shape,
                     it.quality, it.image.shape[1], it.image.shape[0]])
    with (out / "manifest.csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["name", "image", "gt", "kind", "shape", "quality", "width", "height"])
        wr.writerows(rows)
    return out


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 11)
