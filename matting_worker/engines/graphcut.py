"""GrabCut's later rounds with the max-flow over the undecided pixels only.

OpenCV's `grabCut` builds and cuts a graph over every pixel of the frame on every round, even
when most pixels are fixed (`GC_BGD` / `GC_FGD`): after the cluttered path's first round
settles everything farther than a few pixels from the outline, a round's cost is mostly that
frame-wide graph (issue 16, point 4). This module runs such a round as OpenCV does — the
colour models (two 5-component Gaussian mixtures, OpenCV's 65-value layout) re-assigned and
re-learnt from *every* pixel of the frame, the edge weights from the whole frame's contrast
β — and then cuts a graph of the undecided (`GC_PR_*`) pixels alone.

Why that gives OpenCV's answer: a fixed pixel's terminal link costs λ = 9γ = 450, more than all
eight of its edges together can weigh (γ(4 + 4/√2) ≈ 341), so no minimum cut ever moves it;
its edges to undecided neighbours are then a known cost, added to those neighbours' terminal
links, and edges between two fixed pixels are a constant. The minimum cut of the smaller
graph is the full graph's restricted to the undecided pixels (up to exact ties, where two
max-flow codes may pick different, equally cheap, labels).
"""

from __future__ import annotations

from typing import Any

import cv2
import maxflow
import numpy as np
import numpy.typing as npt

__all__ = ["GrabCutError", "contrast", "cut", "learn", "rounds"]

COMPONENTS = 5
"""Gaussians per colour model (OpenCV's `GMM::componentsCount`)."""
GAMMA = 50.0
"""Edge weight scale (OpenCV's γ)."""
_VARIANCE = 0.01
"""Added to a singular covariance's diagonal (OpenCV's white noise)."""
_EPS = float(np.finfo(np.float64).eps)
_MAX_COST = 1e4
"""A colour no mixture explains (likelihood underflows to 0) costs this instead of +inf:
-log of the smallest likelihood that does not underflow is ≈ 745."""

Model = npt.NDArray[np.float64]
"""1×65 float64: 5 weights, 5 means (RGB), 5 covariances (3×3), as OpenCV keeps them."""
Mask = npt.NDArray[np.uint8]


class GrabCutError(ValueError):
    """A colour model cannot be fitted (no pixels on one side, or a singular covariance):
    where OpenCV's `grabCut` raises `cv2.error`."""


def contrast(image: npt.NDArray[np.uint8]) -> float:
    """GrabCut's β: 1 / (2 × the mean squared colour step between 8-neighbours) over the
    whole image (OpenCV's `calcBeta`, so a cut of part of the frame weighs its edges as a
    cut of the whole frame does)."""
    img = image.astype(np.int32)  # exact sums: the squared steps are integers
    h, w = img.shape[:2]
    total = 0
    for a, b in _pairs(img, h, w):
        total += int(np.sum((a - b) ** 2, dtype=np.int64))
    pairs = 4 * w * h - 3 * w - 3 * h + 2
    return 0.0 if total <= _EPS else 1.0 / (2.0 * total / pairs)


_STEPS = ((0, -1, GAMMA), (-1, -1, GAMMA / np.sqrt(2.0)), (-1, 0, GAMMA),
          (-1, 1, GAMMA / np.sqrt(2.0)))
"""Each pixel's left, upper-left, upper and upper-right neighbour, and the edge's γ."""


def _slices(h: int, w: int, dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The pixels that have a neighbour at (dy, dx), and those neighbours."""
    here = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    there = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    return here, there


def _pairs(x: npt.NDArray[Any], h: int, w: int) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    out = []
    for dy, dx, _ in _STEPS:
        here, there = _slices(h, w, dy, dx)
        out.append((x[here], x[there]))
    return out


def _components(model: Model) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                       npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weights (5), means (5×3), inverse covariances (5×3×3) and determinants (5)."""
    flat = model.reshape(-1)
    coefs = flat[:COMPONENTS]
    means = flat[COMPONENTS:4 * COMPONENTS].reshape(COMPONENTS, 3)
    covs = flat[4 * COMPONENTS:].reshape(COMPONENTS, 3, 3)
    dets = np.ones(COMPONENTS)
    inv = np.zeros((COMPONENTS, 3, 3))
    for ci in range(COMPONENTS):
        if coefs[ci] > 0:
            det = float(np.linalg.det(covs[ci]))
            if det <= _EPS:
                raise GrabCutError("singular colour model")
            dets[ci] = det
            inv[ci] = np.linalg.inv(covs[ci])
    return coefs, means, inv, dets


def _densities(colours: npt.NDArray[np.float64], model: Model) -> npt.NDArray[np.float64]:
    """N×5: each component's unweighted density 1/√det · exp(−½ Mahalanobis²) (OpenCV's
    `GMM::operator()(ci, colour)`; 0 for an empty component)."""
    coefs, means, inv, dets = _components(model)
    out = np.zeros((len(colours), COMPONENTS))
    for ci in range(COMPONENTS):
        if coefs[ci] > 0:
            d = colours - means[ci]
            mahal = np.sum((d @ inv[ci]) * d, axis=1)
            out[:, ci] = np.exp(-0.5 * mahal) / np.sqrt(dets[ci])
    return out


def _fit(colours: npt.NDArray[np.float64], comp: npt.NDArray[np.intp], model: Model) -> None:
    """Relearn `model` (in place) from `colours` assigned to components `comp` (OpenCV's
    `learnGMMs` / `endLearning`)."""
    if len(colours) == 0:
        raise GrabCutError("no pixels for a colour model")
    counts = np.bincount(comp, minlength=COMPONENTS).astype(np.float64)
    coefs = np.zeros(COMPONENTS)
    means = np.zeros((COMPONENTS, 3))
    covs = np.zeros((COMPONENTS, 3, 3))
    for ci in range(COMPONENTS):
        n = counts[ci]
        if n == 0:
            continue
        x = colours[comp == ci]
        coefs[ci] = n / len(colours)
        m = x.sum(axis=0) / n
        c = (x.T @ x) / n - np.outer(m, m)
        if np.linalg.det(c) <= _EPS:
            c = c + np.eye(3) * _VARIANCE
        means[ci], covs[ci] = m, c
    flat = model.reshape(-1)
    flat[:COMPONENTS] = coefs
    flat[COMPONENTS:4 * COMPONENTS] = means.reshape(-1)
    flat[4 * COMPONENTS:] = covs.reshape(-1)


def learn(image: npt.NDArray[np.uint8], mask: Mask, bgd: Model, fgd: Model) -> None:
    """One round's model update, in place: every pixel to its most likely component of its
    side's mixture, then both mixtures refitted (OpenCV's `assignGMMsComponents` and
    `learnGMMs`, what `GC_EVAL` does before each cut)."""
    colours = image.reshape(-1, 3).astype(np.float64)
    back = (mask.reshape(-1) & 1) == 0  # GC_BGD (0) and GC_PR_BGD (2)
    for side, model in ((back, bgd), (~back, fgd)):
        x = colours[side]
        if len(x) == 0:
            raise GrabCutError("no pixels for a colour model")
        comp = np.argmax(_densities(x, model), axis=1)
        _fit(x, comp, model)


def cut(image: npt.NDArray[np.uint8], mask: Mask, bgd: Model, fgd: Model, beta: float) -> None:
    """GrabCut's graph cut with the given models (`GC_EVAL_FREEZE_MODEL`) over the undecided
    pixels only; their labels in `mask` become `GC_PR_FGD` / `GC_PR_BGD` (in place). Fixed
    pixels stay. `beta` is the whole image's `contrast`."""
    h, w = mask.shape
    free = (mask == cv2.GC_PR_BGD) | (mask == cv2.GC_PR_FGD)
    n = int(np.count_nonzero(free))
    if n == 0:
        return
    index = np.full((h, w), -1, np.int64)
    index[free] = np.arange(n)
    colours = image[free].astype(np.float64)
    bg_like = _densities(colours, bgd) @ bgd.reshape(-1)[:COMPONENTS]
    fg_like = _densities(colours, fgd) @ fgd.reshape(-1)[:COMPONENTS]
    with np.errstate(divide="ignore"):
        source = np.minimum(-np.log(bg_like), _MAX_COST)  # paid when the pixel is backdrop
        sink = np.minimum(-np.log(fg_like), _MAX_COST)  # paid when it is object
    fixed_fg = mask == cv2.GC_FGD
    img = image.astype(np.float64)
    graph = maxflow.Graph[float](n, 4 * n)
    graph.add_nodes(n)
    for dy, dx, gamma in _STEPS:
        here, there = _slices(h, w, dy, dx)
        f_a, f_b = free[here], free[there]
        pair = f_a | f_b  # edges between two fixed pixels cost the same whatever is cut
        diff = img[here][pair] - img[there][pair]
        wt = gamma * np.exp(-beta * np.einsum("nc,nc->n", diff, diff))
        f_a, f_b = f_a[pair], f_b[pair]
        i_a, i_b = index[here][pair], index[there][pair]
        both = f_a & f_b
        graph.add_edges(i_a[both], i_b[both], wt[both], wt[both])
        # A free pixel beside a fixed one: the edge is cut iff the free pixel takes the other
        # side, a terminal cost (one edge per pixel and direction, so plain indexing adds).
        for mine, idx, other_fg in ((f_a & ~f_b, i_a, fixed_fg[there][pair]),
                                    (f_b & ~f_a, i_b, fixed_fg[here][pair])):
            to_fg, to_bg = mine & other_fg, mine & ~other_fg
            source[idx[to_fg]] += wt[to_fg]
            sink[idx[to_bg]] += wt[to_bg]
    nodes = np.arange(n)
    graph.add_grid_tedges(nodes, source, sink)
    graph.maxflow()
    in_sink = graph.get_grid_segments(nodes)
    mask[free] = np.where(in_sink, cv2.GC_PR_BGD, cv2.GC_PR_FGD).astype(np.uint8)


def rounds(image: npt.NDArray[np.uint8], mask: Mask, bgd: Model, fgd: Model,
           iterations: int) -> None:
    """`iterations` rounds of `grabCut(..., GC_EVAL)`: relearn the models from every pixel,
    then cut the undecided ones (in place: `mask`, `bgd`, `fgd`)."""
    beta = contrast(image)
    for _ in range(iterations):
        learn(image, mask, bgd, fgd)
        cut(image, mask, bgd, fgd, beta)
