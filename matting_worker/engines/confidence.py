"""How sure an engine is of a cut-out: one number in [0, 1] per image (1: it is right).

A reviewer of 100 000 cut-outs needs to know which to look at first; the number only has to
*rank* images by how wrong they are likely to be (the bench checks the rank correlation with
the true error and the share of all error in the least confident tenth).

- The weight-free `classical` engine scores itself from its own signals: how well the border
  model explains the border, how clearly the object stands off its backdrop, whether the
  matte's outline sits on real image edges, how much of the object is left partial, and —
  on the cluttered path — how well the cuts it tried agree and how much of the frame the
  winner claims. The path itself splits the range (`PATH_SPLIT`).
- Learned engines get a score from their output alone (`output_confidence`): the share of
  the subject's pixels that the model left undecided, and whether it found a subject at all.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from matting_worker.engines.background import BorderModel
from matting_worker.engines.cluttered import ClutteredCut
from matting_worker.engines.studio import StudioResult

__all__ = [
    "PATH_SPLIT",
    "cluttered_confidence",
    "edge_support",
    "output_confidence",
    "shadow_share",
    "studio_confidence",
]

F32 = npt.NDArray[np.float32]
UNCERTAIN = (0.1, 0.9)
"""Alpha strictly between these is 'undecided' for `output_confidence`."""
PATH_SPLIT = 0.35
"""Which path the engine took is its strongest signal: a cluttered-path cut-out (a colour-model
segmentation without a known background, wrong far more often than any studio answer on every
bench set) scores in [0, PATH_SPLIT], a studio one in [PATH_SPLIT, 1]."""
PARTIAL_K = 10.0
"""Both paths' scores are scaled by `1 − PARTIAL_K × (share of the image left partial)`: the
error of a cut-out that is right in the large lives in its partial pixels (hair, glass, soft
edges, a wrongly soft band), and MSE counts them per image, so the more of the frame is
partial, the more there is to be wrong (10 % of the frame partial: score 0)."""
SHADE_COS = 0.998
"""Colour-direction agreement (cosine) of a pixel with its backdrop that counts as shade."""


def _ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below `lo`, 1 at or above `hi`, linear between."""
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _undecided(alpha: F32) -> float:
    lo, hi = UNCERTAIN
    subject = int(np.count_nonzero(alpha > lo))
    if subject == 0:
        return 1.0
    return float(np.count_nonzero((alpha > lo) & (alpha < hi))) / subject


def _cover_ok(alpha: F32) -> float:
    """A cut-out of (almost) nothing or (almost) everything is rarely what was wanted."""
    cover = float(np.mean(alpha))
    return _ramp(cover, 0.002, 0.02) * (1.0 - _ramp(cover, 0.7, 0.95))


def _partial_factor(alpha: F32) -> float:
    lo, hi = UNCERTAIN[0] / 2, 1.0 - UNCERTAIN[0] / 2
    share = float(np.count_nonzero((alpha > lo) & (alpha < hi))) / max(alpha.size, 1)
    return max(0.0, 1.0 - PARTIAL_K * share)


def output_confidence(alpha: F32) -> float:
    """A learned engine's score from its matte: 1 − the share of undecided subject pixels
    (beyond what a soft edge needs), times a plausible-coverage factor."""
    u = _undecided(alpha)
    return round(float(np.clip((1.0 - _ramp(u, 0.05, 0.5)) * _cover_ok(alpha), 0.0, 1.0)), 4)


def edge_support(image: npt.NDArray[np.uint8], alpha: F32) -> float:
    """How much stronger the image's gradient is on the matte's outline than on the border
    (the backdrop's own noise and texture). A true outline sits on a real edge."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = np.asarray(cv2.GaussianBlur(g, (0, 0), 1.0), np.float32)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    m8 = (alpha >= 0.5).astype(np.uint8)
    k = np.ones((5, 5), np.uint8)
    outline = (np.asarray(cv2.dilate(m8, k)) - np.asarray(cv2.erode(m8, k))) > 0
    if not outline.any():
        return 0.0
    h, w = g.shape
    s = max(2, round(0.03 * min(h, w)))
    strip = np.zeros((h, w), bool)
    strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
    strip &= ~outline
    ref = float(np.percentile(mag[strip], 90)) if strip.any() else float(mag.mean())
    # Per outline pixel, the strongest gradient across the band: a soft edge spreads its
    # gradient, but the band still holds its peak.
    peak = np.asarray(cv2.dilate(mag, k), np.float32)[outline]
    return float(np.median(peak)) / max(ref, 1.0)


def shadow_share(image: npt.NDArray[np.uint8], surface: F32, alpha: F32) -> float:
    """Share of the cut-out's partial pixels that look like the backdrop in shade: the same
    colour direction, only darker. A soft contact shadow ends up there (the engine cannot
    tell it from a translucent object), and so does a grey object on a grey sweep."""
    part = (alpha > 0.05) & (alpha < 0.95)
    subject = int(np.count_nonzero(alpha > 0.05))
    if not part.any() or subject == 0:
        return 0.0
    img = image[part].astype(np.float32)
    bg = surface[part]
    ni, nb = np.linalg.norm(img, axis=1), np.linalg.norm(bg, axis=1)
    cos = (img * bg).sum(axis=1) / np.maximum(ni * nb, 1e-3)
    shade = (cos > SHADE_COS) & (ni < 0.98 * nb)
    return float(np.count_nonzero(shade)) / subject


def studio_confidence(image: npt.NDArray[np.uint8], model: BorderModel, res: StudioResult,
                      alpha: F32) -> float:
    """The studio path's score: the border model's fit and noise, the object's contrast
    against its backdrop, edge support of the outline, undecided share and coverage."""
    fit = _ramp(model.inlier_fraction, 0.55, 0.9) * (1.0 - 0.3 * _ramp(model.sigma, 6.0, 9.0))
    contrast = _ramp(res.contrast, 1.0, 4.0)
    edges = _ramp(edge_support(image, alpha), 1.0, 6.0)
    undecided = 1.0 - _ramp(_undecided(alpha), 0.1, 0.5)
    shade = 1.0 - _ramp(shadow_share(image, model.surface, alpha), 0.03, 0.25)
    score = (0.45 + 0.55 * fit) * (0.6 + 0.4 * contrast) * (0.5 + 0.5 * edges)
    score *= (0.5 + 0.5 * undecided) * (0.3 + 0.7 * shade) * _cover_ok(alpha)
    score *= _partial_factor(alpha)
    return round(float(np.clip(PATH_SPLIT + (1.0 - PATH_SPLIT) * score, 0.0, 1.0)), 4)


def cluttered_confidence(image: npt.NDArray[np.uint8], cut: ClutteredCut, alpha: F32) -> float:
    """The cluttered path's score, at most `PATH_SPLIT`: agreement of the cuts it tried, how
    cleanly the winner separates the colours, edge support of its outline, and whether it
    claims a plausible share of the frame (a cut that takes half a busy photo has usually
    swallowed background)."""
    agree = _ramp(cut.agreement, 0.3, 0.9)
    sep = _ramp(cut.separation, 0.5, 2.5)
    edges = _ramp(edge_support(image, alpha), 1.5, 8.0)
    modest = 1.0 - _ramp(float(np.mean(alpha)), 0.2, 0.5)
    score = (0.2 * agree + 0.35 * sep + 0.25 * edges + 0.2 * modest) * _cover_ok(alpha)
    score *= _partial_factor(alpha)
    return round(float(np.clip(PATH_SPLIT * score, 0.0, 1.0)), 4)
