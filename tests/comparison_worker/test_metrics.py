"""Metrics on cases with a known answer, and against a plain re-implementation of the reference."""

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from comparison_worker.metrics import (
    connectivity_error,
    free_metrics,
    gradient_error,
    gt_metrics,
    mse,
    sad,
)
from shared.imaging import decode_alpha

REPO = Path(__file__).resolve().parents[2]
QUALITY_SET = Path(os.environ.get("QUALITY_SET", REPO.parent / "shared" / "quality-set"))
if not QUALITY_SET.is_dir():  # worktrees sit one level deeper than the main checkout
    QUALITY_SET = REPO.parents[1] / "shared" / "quality-set"


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


# --- an independent, literal transcription of the alphamatting.com evaluation code -------------


def ref_gradient(pred: np.ndarray, gt: np.ndarray, sigma: float = 1.4) -> float:
    def gauss(x: float) -> float:
        return math.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))

    def dgauss(x: float) -> float:
        return -x * gauss(x) / sigma**2

    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    size = 2 * half + 1
    hx = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            hx[i, j] = gauss(i - half) * dgauss(j - half)
    hx /= math.sqrt((hx**2).sum())
    hy = hx.T

    def amp(im: np.ndarray) -> np.ndarray:
        im = im.astype(np.float64)
        gx = ndimage.convolve(im, hx, mode="nearest")
        gy = ndimage.convolve(im, hy, mode="nearest")
        return np.sqrt(gx**2 + gy**2)

    return float(((amp(pred) - amp(gt)) ** 2).sum() / 1000.0)


def ref_connectivity(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> float:
    pred = pred.astype(np.float64)
    gt = gt.astype(np.float64)
    n = round(1 / step)
    thresholds = [i / n for i in range(n + 1)]  # exactly MATLAB's 0:0.1:1
    l_map = -np.ones_like(pred)
    for i in range(1, len(thresholds)):
        both = (pred >= thresholds[i]) & (gt >= thresholds[i])
        labels, count = ndimage.label(both)
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            omega = labels == sizes.argmax()
        else:
            omega = np.zeros_like(both)
        l_map[(l_map == -1) & ~omega] = thresholds[i - 1]
    l_map[l_map == -1] = 1
    pd = pred - l_map
    gd = gt - l_map
    pphi = 1 - pd * (pd >= 0.15)
    gphi = 1 - gd * (gd >= 0.15)
    return float(np.abs(pphi - gphi).sum() / 1000.0)


# --- known answers ------------------------------------------------------------------------------


def test_identical_mattes_score_zero() -> None:
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((60, 80)), 3).astype(np.float32)
    a = (a - a.min()) / (a.max() - a.min())
    assert gt_metrics(a, a.copy()) == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_constant_offset() -> None:
    h, w, c = 40, 50, 0.1
    ramp = np.tile(np.linspace(0.2, 0.7, w, dtype=np.float64), (h, 1))
    pred = ramp + c
    assert sad(pred, ramp) == pytest.approx(h * w * c / 1000.0, rel=1e-9)
    assert mse(pred, ramp) == pytest.approx(c * c, rel=1e-9)
    # A constant shift leaves every gradient unchanged.
    assert gradient_error(pred, ramp) == pytest.approx(0.0, abs=1e-9)
    assert gradient_error(pred, ramp) == pytest.approx(ref_gradient(pred, ramp), abs=1e-9)


def test_shifted_disc() -> None:
    gt = disc(64, 64, 32, 32, 14)
    pred = np.roll(gt, 3, axis=1)
    assert sad(pred, gt) > 0
    assert gradient_error(pred, gt) > 0
    # Binary mattes whose overlap is one component: every differing pixel costs exactly 1.
    assert connectivity_error(pred, gt) == pytest.approx(sad(pred, gt), rel=1e-9)
    assert gradient_error(pred, gt) == pytest.approx(ref_gradient(pred, gt), rel=1e-4)


def test_detached_piece_costs_connectivity() -> None:
    gt = disc(64, 96, 32, 32, 16)
    pred = gt.copy()
    pred[10:20, 70:80] = 0.5  # a soft blob the ground truth does not have, away from the disc
    with_piece = connectivity_error(pred, gt)
    without_piece = connectivity_error(gt, gt)
    assert without_piece == 0.0
    # Each of the 100 pixels: level 0, d = 0.5 ≥ 0.15 → φ = 0.5 against the truth's φ = 1.
    assert with_piece == pytest.approx(100 * 0.5 / 1000.0, rel=1e-6)
    assert with_piece == pytest.approx(ref_connectivity(pred, gt), rel=1e-6)


def test_split_component_keeps_only_the_largest() -> None:
    gt = np.zeros((40, 80), np.float32)
    gt[10:30, 5:75] = 1.0
    pred = gt.copy()
    pred[:, 50:52] = 0.0  # a gap splits the bar: the right piece leaves the main component
    pred[10:30, 52:75] = 0.95  # and slightly dim
    err = connectivity_error(pred, gt)
    # Gap: 20·2 pixels at error 1. Right piece: level 0, φ_pred = 1 − 0.95, φ_gt = 1 − 1.
    assert err == pytest.approx((40 * 1.0 + 20 * 23 * 0.05) / 1000.0, rel=1e-5)
    assert err == pytest.approx(ref_connectivity(pred, gt), rel=1e-6)
    # The same dim piece still attached to the body costs nothing (level 0.9, d < 0.15).
    joined = gt.copy()
    joined[10:30, 52:75] = 0.95
    assert connectivity_error(joined, gt) == pytest.approx(0.0, abs=1e-9)
    assert sad(joined, gt) > 0


def test_slightly_dim_matte_has_no_connectivity_error() -> None:
    gt = disc(48, 48, 24, 24, 12)
    pred = gt * 0.95
    # The disc leaves the component at t = 1.0 (level 0.9); d < 0.15 for both → φ = 1 both.
    assert connectivity_error(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert sad(pred, gt) > 0


def test_size_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ground truth"):
        gt_metrics(np.zeros((4, 5), np.float32), np.zeros((5, 4), np.float32))


def test_free_metrics() -> None:
    a = np.zeros((10, 20), np.float32)
    a[3:7, 5:15] = 1.0
    a[3:7, 15:17] = 0.5
    m = free_metrics(a)
    assert m["coverage"] == pytest.approx((40 + 8 * 0.5) / 200)
    assert m["uncertain"] == pytest.approx(8 / 200)
    assert m["border_alpha"] == 0.0
    frame = np.ones((10, 20), np.float32)
    frame[1:-1, 1:-1] = 0.0
    assert free_metrics(frame)["border_alpha"] == pytest.approx(1.0)
    assert free_metrics(frame)["uncertain"] == 0.0


# --- real images from the team's quality set ---------------------------------------------------


def _quality_cases() -> list[tuple[str, Path]]:
    manifest = QUALITY_SET / "manifest.csv"
    if not manifest.is_file():
        return []
    rows = list(csv.DictReader(manifest.open()))
    picks = [rows[0], *[r for r in rows if r["edge"] == "hair"][:1]]
    picks += [r for r in rows if r["glass"] == "1"][:1] or rows[-1:]
    return [(r["name"], QUALITY_SET / r["gt"]) for r in picks]


@pytest.mark.skipif(not _quality_cases(), reason="quality set not found (set QUALITY_SET)")
@pytest.mark.parametrize("name,gt_path", _quality_cases())
def test_quality_set_against_reference(name: str, gt_path: Path) -> None:
    gt = decode_alpha(gt_path.read_bytes())
    # A plausible imperfect matte: softened, a little too opaque, quantised like a PNG.
    pred = np.clip(ndimage.gaussian_filter(gt, 2.0) * 1.15 - 0.05, 0, 1)
    pred = (np.rint(pred * 255) / 255).astype(np.float32)
    got = gt_metrics(pred, gt)
    d = pred.astype(np.float64) - gt
    assert got["sad"] == pytest.approx(np.abs(d).sum() / 1000, rel=1e-9)
    assert got["mse"] == pytest.approx((d**2).mean(), rel=1e-9)
    assert got["grad"] == pytest.approx(ref_gradient(pred, gt), rel=1e-3)
    assert got["conn"] == pytest.approx(ref_connectivity(pred, gt), rel=1e-5)
    assert got["grad"] > 0 and got["conn"] > 0
