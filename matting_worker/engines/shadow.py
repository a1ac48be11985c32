"""Soft contact shadows: background by default, so the backdrop model learns them.

A contact shadow is the backdrop in shade: the same colour direction as the backdrop, only
darker, and soft — its darkening changes slowly across the image. An object is neither: its
colour differs from the backdrop's, or (a grey object on a grey sweep) it has an outline where
the darkening jumps. So the shadow is the part of the first cut that is shade-like, changes
slowly, and is reached from the open backdrop without crossing an edge, fading out where it
meets it (a faint object meets it at its outline). Its darkening (a factor per pixel, carried
under the object's nearby edge by normalised convolution) multiplies the border model's
surface, and the studio path runs again on that shaded backdrop: the shadow then is
background, and the object's edge over it is matted against the right colour.

A cut that would be shadow almost entirely is a faint object the same hue as its backdrop, not
a shadow; it is left alone (`OBJECT_LEFT`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from matting_worker.engines.background import BorderModel
from matting_worker.engines.studio import disk, touching

__all__ = ["ShadowFit", "fit_shadow", "shaded_model"]

F32 = npt.NDArray[np.float32]
B8 = npt.NDArray[np.bool_]
SHADE_SIGMA = 2.0
"""Gaussian averaging (pixels) before the darkening is read (the per-pixel noise would break
the slope test)."""
SHADE_SLOPE = 0.12
"""Steepest change of the darkening factor per edge band still taken for a soft shadow
(0.015 a pixel at 640 px); a low-contrast object's (even defocused) outline is steeper. Per
band, because a shadow's softness scales with the picture, and a lens blur does not."""
SHADE_CHROMA = 0.25
"""Largest colour deviation from the darkened backdrop, as a share of the darkening itself."""
SHADE_CHROMA_FLOOR = 4.0
"""... and at least this much (8-bit RGB, averaged), for noise and JPEG."""
SHADE_MIN_DARKENING = 0.02
"""A pixel darker than the backdrop by less than this share is backdrop, not shadow."""
SHADE_PIXEL_K = 3.0
"""A shadow pixel sits within this many border noise levels of the darkened backdrop ..."""
SHADE_PIXEL_FLOOR = 8.0
"""... or within this distance (8-bit RGB), for JPEG."""
SOFTNESS_BANDS = 2.0
"""Least distance (edge bands) over which a shadow's darkening builds up to its depth."""
FADE_BANDS = 3.0
"""Least distance (edge bands) over which a shadow fades out where it meets the open
backdrop (its darkening over the steepest slope there): a faint object meets it at its
outline, a step of a few pixels, even where the rest of it is smooth."""
SHADE_MIN_DEPTH = 0.08
"""A shadow darkens the backdrop by at least this share at its deepest (95th percentile):
shallower, a smooth darker patch is a faint object of the backdrop's hue (white on white
darkens it by 3–7 %; the independent set's contact shadows by 14–33 %)."""
OBJECT_LEFT = 0.5
"""What must remain of the cut without the shadow (its core, as a share of the shadow's
area inside the cut); less, and the 'shadow' is a faint object of the backdrop's hue."""


@dataclass
class ShadowFit:
    mask: B8
    """Pixels taken for the contact shadow (inside the first cut and its fringe)."""
    factor: F32
    """H×W darkening of the backdrop (1: unshaded), defined everywhere."""


def fit_shadow(image: npt.NDArray[np.uint8], model: BorderModel, coarse: B8, band: int
               ) -> ShadowFit | None:
    """The contact shadow of a first studio cut (`coarse`), or None when there is none."""
    if not coarse.any():
        return None
    img = np.asarray(cv2.GaussianBlur(image.astype(np.float32), (0, 0), SHADE_SIGMA), np.float32)
    surface = model.surface
    norm2 = np.maximum((surface * surface).sum(axis=2), 1.0)
    factor = ((img * surface).sum(axis=2) / norm2).astype(np.float32)
    chroma = np.linalg.norm(img - factor[..., None] * surface, axis=2)
    darkening = np.sqrt(norm2) * (1.0 - factor)
    gy, gx = np.gradient(factor)
    slope = np.hypot(gx, gy)
    # Each pixel itself, not only its neighbourhood, is the darkened backdrop (hair and
    # strands average to a shade but are not one).
    raw = np.linalg.norm(image.astype(np.float32) - factor[..., None] * surface, axis=2)
    shade_like = (
        (factor < 1.0 - SHADE_MIN_DARKENING)
        & (chroma < np.maximum(SHADE_CHROMA * darkening, SHADE_CHROMA_FLOOR))
        & (slope < SHADE_SLOPE / band)
        & (raw < max(SHADE_PIXEL_K * model.sigma, SHADE_PIXEL_FLOOR))
    )
    # A shadow is a broad patch; what survives only in threads is texture.
    shade_like = cv2.morphologyEx(shade_like.astype(np.uint8), cv2.MORPH_OPEN, disk(2)) > 0
    # Reached from the open backdrop: components that enter the cut and reach its outline (the
    # cut's edge pixels count: where the faint test carried the cut out to the shadow's last
    # few levels, nothing shade-like is left outside it, and three shadows of the independent
    # set were kept as object, MSE 0.03–0.07). A faint object's outline is a jump in the
    # darkening, which the slope test keeps out of `shade_like`.
    n, labels = cv2.connectedComponents(shade_like.astype(np.uint8), connectivity=4)
    if n <= 1:
        return None
    # The open backdrop: outside the cut, or inside it but unshaded and the backdrop's colour
    # (where the averaged faint test carried the cut out past a shadow's last levels).
    unshaded = (factor >= 1.0 - SHADE_MIN_DARKENING) & (chroma < SHADE_CHROMA_FLOOR)
    outside = cv2.dilate((~coarse | unshaded).astype(np.uint8), disk(2)) > 0
    enters = np.zeros(n, bool)
    enters[np.unique(labels[coarse & shade_like])] = True
    touches = np.zeros(n, bool)
    touches[np.unique(labels[outside & shade_like])] = True
    keep = enters & touches
    keep[0] = False
    # A shadow is soft: its darkening builds up over a distance (peak over steepest slope)
    # of several edge bands; a faint object reaches its small contrast within its outline.
    # And it is a real shade (`SHADE_MIN_DEPTH`), not a few levels.
    for i in np.flatnonzero(keep):
        part = labels == i
        deep = float(np.percentile(1.0 - factor[part], 95))
        steep = float(np.percentile(slope[part], 90))
        fade = float(np.percentile(slope[part & outside], 90))
        keep[i] = deep >= max(SOFTNESS_BANDS * band * max(steep, 1e-4),
                              FADE_BANDS * band * fade, SHADE_MIN_DEPTH)
    mask: B8 = keep[labels]
    inside = int(np.count_nonzero(mask & coarse))
    h, w = coarse.shape
    if inside < max(4 * band * band, (h * w) // 2000):
        return None
    rest = cv2.erode((coarse & ~mask).astype(np.uint8), disk(2)) > 0
    if np.count_nonzero(rest) < OBJECT_LEFT * inside:
        return None
    # The averaging blurs the object into the shadow beside it, so the shadow's darkest strip
    # (right under the object) is read pixel by pixel: each that is still the backdrop's
    # colour, darker, is shadow with its own darkening.
    pix = np.asarray(image, np.float32)
    pix_factor = ((pix * surface).sum(axis=2) / norm2).astype(np.float32)
    pix_shade = (
        (np.linalg.norm(pix - pix_factor[..., None] * surface, axis=2)
         < max(SHADE_PIXEL_K * model.sigma, SHADE_PIXEL_FLOOR))
        & (pix_factor < 1.0 - SHADE_MIN_DARKENING)
    )
    gap_r = round(2 * SHADE_SIGMA) + 3
    gap = (cv2.dilate(mask.astype(np.uint8), disk(gap_r)) > 0) & ~mask & pix_shade
    gap = touching(gap, cv2.dilate(mask.astype(np.uint8), disk(1)) > 0)  # across one pixel
    factor = np.where(gap, pix_factor, factor).astype(np.float32)
    mask = mask | gap
    # The darkening where it was read; under the object's edge nearby, spread from around it;
    # elsewhere the backdrop is unshaded.
    known = mask | ~(cv2.dilate(coarse.astype(np.uint8), disk(2 * band)) > 0)
    value = np.where(mask, factor, 1.0).astype(np.float32)
    wgt = known.astype(np.float32)
    sig = max(2.0, float(band))
    num = np.asarray(cv2.GaussianBlur(value * wgt, (0, 0), sig), np.float32)
    den = np.asarray(cv2.GaussianBlur(wgt, (0, 0), sig), np.float32)
    spread = num / np.maximum(den, 1e-6)
    near = cv2.dilate(mask.astype(np.uint8), disk(3 * band)) > 0
    out = np.ones((h, w), np.float32)
    out[near] = spread[near]
    out[mask] = factor[mask]
    return ShadowFit(mask=mask, factor=np.clip(out, 0.05, 1.0).astype(np.float32))


def shaded_model(model: BorderModel, shadow: ShadowFit) -> BorderModel:
    """The border model with the shadow's darkening applied to its surface."""
    surface = (model.surface * shadow.factor[..., None]).astype(np.float32)
    return BorderModel(surface, model.sigma, model.inlier_fraction, model.holds)
