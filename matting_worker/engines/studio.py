"""Alpha on a known background: the studio path of the `classical` engine.

When the border model holds, every pixel's background colour B is known, and a pixel is the
blend `I = αF + (1−α)B`. With F taken from the nearest solidly opaque pixels of the object,
alpha follows from how far I has moved from B towards F. That gives soft edges, strands and
semi-transparent parts their real partial values, where a threshold could only say 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from .background import BorderModel

__all__ = ["StudioResult", "studio_alpha"]

F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]


@dataclass
class StudioResult:
    alpha: F32
    coarse: B8
    """The object's mask before matting (components of the clearly-not-background pixels)."""
    foreground: F32
    """H×W×3 estimated object colours (0–255)."""


def _disk(r: int) -> npt.NDArray[np.uint8]:
    return np.asarray(
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)), np.uint8
    )


def _keep_components(mask: B8, min_area: int) -> B8:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    if n > 1 and not keep.any():
        keep[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = True
    out: B8 = keep[labels]
    return out


def _fill_small_holes(mask: B8, max_area: int) -> B8:
    inv = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    h, w = mask.shape
    fill = np.zeros(n, bool)
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        fill[i] = area <= max_area and not touches
    out: B8 = mask | fill[labels]
    return out


def _spread(values: F32, weight: F32, sigma: float) -> tuple[F32, F32]:
    """Normalised convolution: the weighted local mean of `values` and the weight's density."""
    k = (0, 0)
    num = np.asarray(cv2.GaussianBlur(values * weight[..., None], k, sigma), np.float32)
    den = np.asarray(cv2.GaussianBlur(weight, k, sigma), np.float32)
    return num / np.maximum(den, 1e-6)[..., None], den


def _object_colour(image: F32, solid: B8, band: int) -> F32:
    """F near every pixel: solid colours spread outwards, near scale first, then wider."""
    w = solid.astype(np.float32)
    f_near, d_near = _spread(image, w, max(1.5, band / 2))
    f_far, d_far = _spread(image, w, max(4.0, band * 3))
    mean = image[solid].mean(axis=0) if solid.any() else image.reshape(-1, 3).mean(axis=0)
    t_near = np.clip(d_near / 0.05, 0, 1)[..., None]
    t_far = np.clip(d_far / 0.01, 0, 1)[..., None]
    far = t_far * f_far + (1 - t_far) * mean[None, None, :]
    out: F32 = (t_near * f_near + (1 - t_near) * far).astype(np.float32)
    return out


def studio_alpha(image: npt.NDArray[np.uint8], model: BorderModel, band: int) -> StudioResult:
    h, w = image.shape[:2]
    img = image.astype(np.float32)
    diff = img - model.surface
    dist = np.linalg.norm(diff, axis=2)
    sigma = model.sigma
    t_lo = max(2.5 * sigma, 6.0)
    t_hi = max(5.0 * sigma, 20.0)
    smooth = np.asarray(cv2.GaussianBlur(dist, (0, 0), 1.0), np.float32)
    coarse = (dist > t_hi) | (smooth > t_hi)
    coarse = _keep_components(coarse, max(30, (h * w) // 20000))
    coarse = _fill_small_holes(coarse, (h * w) // 2000)
    # Solid: near the brightest contrast around it; a blend is well below its neighbours.
    local_max = np.asarray(cv2.dilate(smooth, _disk(max(2, band))), np.float32)
    solid = coarse & (smooth >= 0.8 * local_max) & (dist > t_hi)
    solid = cv2.erode(solid.astype(np.uint8), _disk(1)) > 0
    fg = _object_colour(img, solid, band)
    contrast = np.linalg.norm(fg - model.surface, axis=2)
    ratio = np.clip((dist - sigma) / np.maximum(contrast - sigma, 1.0), 0.0, 1.0)
    near = cv2.dilate(coarse.astype(np.uint8), _disk(band)) > 0
    interior = cv2.erode(coarse.astype(np.uint8), _disk(band)) > 0
    alpha = np.zeros((h, w), np.float32)
    alpha[near] = ratio[near]
    alpha[near & (dist < t_lo) & ~coarse] = 0.0
    alpha[solid] = 1.0
    # Deep inside, only a clearly semi-transparent (collinear, well-below-F) part is partial.
    cos = np.einsum("hwc,hwc->hw", diff, fg - model.surface) / np.maximum(dist * contrast, 1e-3)
    see_through = interior & ~solid & (cos > 0.985) & (ratio < 0.9)
    alpha[interior & ~see_through] = 1.0
    return StudioResult(alpha=alpha, coarse=coarse, foreground=fg)
