"""Matte quality metrics: the four of Rhemann et al. (2009) and three that need no ground truth.

The definitions follow the alphamatting.com / Deep Image Matting evaluation code (the MATLAB
`compute_gradient_loss` / `compute_connectivity_error` that GCA-Matting, MatteFormer and others
port), with two deliberate differences fixed by docs/DESIGN.md
("Ground truth in an upload"):

* the error is summed over the whole image, not only the trimap's unknown region (an upload
  carries no trimap, and background leaks are errors we want to see);
* the mattes are taken in [0, 1] directly. The reference code divides its 0–255 inputs by 255
  first, so the numbers are on the same scale; `grad`, `conn` and `sad` are then divided by 1000.

The connected component in `connectivity_error` is the largest *foreground* component with
4-connectivity, as MATLAB's `bwconncomp(..., 4)` does (some Python ports let the background
label win `argmax`, which is a bug we do not copy). Thresholds are exactly k·step.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from shared.formats import FREE_KEYS, GT_KEYS, Metric

__all__ = [
    "CONN_STEP",
    "FREE_KEYS",
    "GRAD_SIGMA",
    "GT_KEYS",
    "UNCERTAIN_RANGE",
    "connectivity_error",
    "free_metrics",
    "gaussian_derivative_kernels",
    "gradient_error",
    "gt_metrics",
    "mse",
    "sad",
]

GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_PHI_CUTOFF = 0.15
UNCERTAIN_RANGE = (0.05, 0.95)

FloatArray = npt.NDArray[np.floating]


def _pair(alpha: FloatArray, gt: FloatArray) -> tuple[FloatArray, FloatArray]:
    if alpha.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"mattes must be 2-D, got {alpha.shape} and {gt.shape}")
    if alpha.shape != gt.shape:
        raise ValueError(
            f"matte is {alpha.shape[1]}x{alpha.shape[0]} but ground truth is "
            f"{gt.shape[1]}x{gt.shape[0]}"
        )
    return alpha, gt


def sad(alpha: FloatArray, gt: FloatArray) -> float:
    """Sum of absolute differences / 1000."""
    a, g = _pair(alpha, gt)
    return float(np.abs(a.astype(np.float64) - g.astype(np.float64)).sum() / 1000.0)


def mse(alpha: FloatArray, gt: FloatArray) -> float:
    """Mean squared difference over every pixel."""
    a, g = _pair(alpha, gt)
    d = a.astype(np.float64) - g.astype(np.float64)
    return float(np.mean(d * d))


def gaussian_derivative_kernels(
    sigma: float = GRAD_SIGMA,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The separable factors (smoothing, derivative) of the reference 2-D kernel.

    The reference builds hx[i, j] = G(i)·G'(j) on a (2h+1)² grid, h from ε = 0.01, and scales it
    to unit L2 norm. That kernel is an outer product, so filtering with its two 1-D factors is
    the same operator at a fraction of the cost on large images; the norm is folded into the
    derivative factor.
    """
    eps = 1e-2
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * eps)))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    dg = -u * g / sigma**2
    norm = math.sqrt(float((g**2).sum() * (dg**2).sum()))
    return g, dg / norm


def _grad_magnitude(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    g, dg = (k.astype(np.float32) for k in gaussian_derivative_kernels())
    # BORDER_REPLICATE is MATLAB imfilter's 'replicate'; cv2 correlates like imfilter does
    # (convolution would only flip the signs, not the magnitude).
    gx = cv2.sepFilter2D(x, cv2.CV_32F, dg, g, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(x, cv2.CV_32F, g, dg, borderType=cv2.BORDER_REPLICATE)
    out: npt.NDArray[np.float32] = np.hypot(gx, gy)
    return out


def gradient_error(alpha: FloatArray, gt: FloatArray) -> float:
    """Σ(|∇α|σ − |∇g|σ)² / 1000 with normalised first-derivative-of-Gaussian filters, σ = 1.4."""
    a, g = _pair(alpha, gt)
    # float32 keeps a 24-megapixel matte within a few hundred MB; the sum is taken in float64.
    diff = _grad_magnitude(a.astype(np.float32)) - _grad_magnitude(g.astype(np.float32))
    return float(np.square(diff, dtype=np.float64).sum() / 1000.0)


def _largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.view(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    if n <= 1:
        return np.zeros_like(mask)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out: npt.NDArray[np.bool_] = labels == biggest
    return out


def _levels(
    a: npt.NDArray[np.float32], g: npt.NDArray[np.float32], n_steps: int, step: float
) -> npt.NDArray[np.float32]:
    level = np.ones(a.shape, dtype=np.float32)
    # Pixels still in the largest component at every threshold so far; once out, a pixel's
    # level is fixed, exactly like the reference's "l_map == -1" bookkeeping.
    alive = np.ones(a.shape, dtype=np.bool_)
    for i in range(1, n_steps + 1):
        t = round(i * step, 12)
        omega = _largest_component(np.ascontiguousarray((a >= t) & (g >= t)))
        level[alive & ~omega] = round((i - 1) * step, 12)
        alive &= omega
        if not alive.any():
            break
    return level


def connectivity_error(alpha: FloatArray, gt: FloatArray, step: float = CONN_STEP) -> float:
    """Σ|φ(α) − φ(g)| / 1000, φ = 1 − d·[d ≥ 0.15], d = value − level where it disconnects.

    A pixel's level l is the last threshold at which it still belonged to the largest component
    shared by both mattes (1 if it never left it).
    """
    a64, g64 = _pair(alpha, gt)
    a = a64.astype(np.float32, copy=False)
    g = g64.astype(np.float32, copy=False)
    n_steps = round(1.0 / step)
    level = np.zeros(a.shape, dtype=np.float32)
    # Every later threshold's mask lies inside the first one, and whatever lies outside it
    # leaves the component at the first step (level 0): only its bounding box needs labelling.
    first = (a >= step) & (g >= step)
    rows = np.flatnonzero(first.any(axis=1))
    cols = np.flatnonzero(first.any(axis=0))
    if rows.size:
        win = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        level[win] = _levels(a[win], g[win], n_steps, step)
    da = a - level
    dg = g - level
    phi_a = 1.0 - da * (da >= CONN_PHI_CUTOFF)
    phi_g = 1.0 - dg * (dg >= CONN_PHI_CUTOFF)
    return float(np.abs(phi_a - phi_g).sum(dtype=np.float64) / 1000.0)


def gt_metrics(alpha: FloatArray, gt: FloatArray) -> dict[str, float]:
    """All four ground-truth metrics; both mattes are clipped to [0, 1] first."""
    a = np.clip(alpha, 0.0, 1.0)
    g = np.clip(gt, 0.0, 1.0)
    return {
        Metric.SAD: sad(a, g),
        Metric.MSE: mse(a, g),
        Metric.GRAD: gradient_error(a, g),
        Metric.CONN: connectivity_error(a, g),
    }


def free_metrics(alpha: FloatArray) -> dict[str, float]:
    """What a matte says about itself with no ground truth.

    coverage: mean α, the foreground share of the image. uncertain: share of pixels with
    0.05 < α < 0.95; a large value means a mushy matte. border_alpha: mean α on the outermost
    pixel ring; a cut-out of a centred subject should be near 0 there, so a high value hints at
    background kept as foreground (a cropped subject touching the frame raises it too).
    """
    if alpha.ndim != 2 or alpha.size == 0:
        raise ValueError(f"matte must be a non-empty 2-D array, got shape {alpha.shape}")
    a = np.clip(alpha.astype(np.float32, copy=False), 0.0, 1.0)  # clip copies already
    lo, hi = UNCERTAIN_RANGE
    h, w = a.shape
    small = h <= 2 or w <= 2
    ring = a.ravel() if small else np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    return {
        Metric.COVERAGE: float(a.mean(dtype=np.float64)),
        Metric.UNCERTAIN: float(np.count_nonzero((a > lo) & (a < hi)) / a.size),
        Metric.BORDER_ALPHA: float(ring.mean(dtype=np.float64)),
    }
