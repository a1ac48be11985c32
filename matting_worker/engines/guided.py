"""Colour guided filter (He et al. 2013) for carrying a low-resolution alpha to full size.

A matte solved at bounded resolution loses the fine edge; the guided filter's local linear
model `alpha = A·I + b` is solved where the matte is, then its coefficients (smooth by
construction) are upsampled and applied to the full-resolution colours, so the edge follows
the real image again. Box filters through OpenCV keep it linear in the pixel count.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["guided_coefficients", "guided_upsample"]

F32 = npt.NDArray[np.float32]


def _box(x: F32, r: int) -> F32:
    k = (2 * r + 1, 2 * r + 1)
    return np.asarray(cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT), np.float32)


def guided_coefficients(guide: F32, src: F32, radius: int, eps: float) -> tuple[F32, F32]:
    """Per-pixel (A: H×W×3, b: H×W) of the colour guided filter, already box-averaged."""
    r = max(1, radius)
    mean_i = _box(guide, r)
    mean_p = _box(src, r)
    mean_ip = _box(guide * src[..., None], r)
    cov_ip = mean_ip - mean_i * mean_p[..., None]
    # 3×3 covariance of the guide in every window, regularised by eps.
    var = np.empty((*guide.shape[:2], 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            v = _box(guide[..., i] * guide[..., j], r) - mean_i[..., i] * mean_i[..., j]
            var[..., i, j] = v
            var[..., j, i] = v
    var += np.eye(3, dtype=np.float32) * eps
    a = np.linalg.solve(var, cov_ip[..., None])[..., 0].astype(np.float32)
    b = (mean_p - np.einsum("hwc,hwc->hw", a, mean_i)).astype(np.float32)
    return _box(a, r), _box(b, r)


def guided_upsample(
    guide_small: F32, src_small: F32, guide_full: F32, radius: int = 2, eps: float = 1e-4
) -> F32:
    """`src_small` carried to `guide_full`'s size along the full-resolution edges.

    Guides are float32 RGB in [0, 1]. With equal sizes this is the plain guided filter.
    """
    a, b = guided_coefficients(guide_small, src_small, radius, eps)
    h, w = guide_full.shape[:2]
    if a.shape[:2] != (h, w):
        a = np.asarray(cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
        b = np.asarray(cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    out: F32 = np.einsum("hwc,hwc->hw", a, guide_full) + b
    return np.clip(out, 0.0, 1.0).astype(np.float32)
