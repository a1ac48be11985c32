"""The cluttered path's two-stage GrabCut (rounds at `COARSE_SIDE`, outline band at
`CUT_SIDE`) against the one-stage cut it replaced, on composites whose truth is known."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from matting_worker.engines import cluttered
from matting_worker.engines.cluttered import cluttered_cut

U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]


def _scene(w: int, h: int, seed: int = 3) -> tuple[U8, B]:
    """A two-coloured object (ellipse and bar) on a busy grey-noise backdrop, and its mask."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 1.2)
    noise = np.clip((noise - noise.mean()) * 4 + 128, 0, 255)
    image = np.repeat(noise[..., None], 3, axis=2)
    ell = np.zeros((h, w), np.uint8)
    cv2.ellipse(ell, (w // 2, h // 2), (w // 4, h // 4), 15, 0, 360, 1, -1)
    bar = np.zeros((h, w), np.uint8)
    cv2.rectangle(bar, (w // 2, h // 3), (4 * w // 5, h // 2), 1, -1)
    image[ell > 0] = (200, 120, 40)
    image[bar > 0] = (40, 90, 190)
    image += rng.normal(0, 2.0, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), (ell | bar) > 0


def _iou(a: B, b: B) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


def test_two_stage_cut_agrees_with_the_one_stage_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Big enough for both stages (the cut works at 400, its rounds at 280): the answer is
    the object, as the all-at-400 cut's is, and the two agree."""
    image, truth = _scene(560, 420)
    two = cluttered_cut(image)
    monkeypatch.setattr(cluttered, "REFINE_BAND", 0)
    one = cluttered_cut(image)
    assert two.how == one.how == "grabcut"
    got, ref = two.mask > 0.5, one.mask > 0.5
    assert _iou(got, truth) > 0.95
    assert _iou(got, ref) > 0.95


def test_image_below_the_coarse_side_is_cut_in_one_stage() -> None:
    """Under `COARSE_SIDE` there is nothing to shrink: the rounds run at the image's size."""
    image, truth = _scene(160, 120)
    assert max(image.shape[:2]) < cluttered.COARSE_SIDE
    cut = cluttered_cut(image)
    assert cut.mask.shape == truth.shape
    assert _iou(cut.mask > 0.5, truth) > 0.9


def test_wide_image_keeps_its_object() -> None:
    """A 5:1 strip: its coarse copy is only 56 pixels high, and the object is still found."""
    image, truth = _scene(600, 120)
    cut = cluttered_cut(image)
    assert cut.mask.shape == truth.shape
    assert _iou(cut.mask > 0.5, truth) > 0.85


def test_border_cluster_distance_is_the_nearest_centre_norm() -> None:
    """The per-centre loop gives the figures of the plain norm over every centre."""
    image, _ = _scene(200, 150)
    cv2.setRNGSeed(0)
    d, q = cluttered._border_gmm_distance(image)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    cv2.setRNGSeed(0)
    s = max(2, round(0.04 * 150))
    strip = np.zeros((150, 200), bool)
    strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
    samples = lab[strip]
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cluttered._cv.kmeans(samples, min(8, len(samples) // 50), None, crit, 2,
                                         cv2.KMEANS_PP_CENTERS)
    ref = np.min(np.linalg.norm(lab[:, :, None, :] - centres[None, None], axis=3), axis=2)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, ref, atol=1e-3)
    assert q == pytest.approx(float(np.percentile(ref[strip], 99.5)), abs=1e-3)


def test_settled_rounds_agree_with_free_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixing what lies far from the first round's outline (`SETTLED_SHARE`) leaves the cut
    as the rounds that may still flip every pixel make it."""
    image, truth = _scene(560, 420)
    settled = cluttered_cut(image)
    monkeypatch.setattr(cluttered, "SETTLED_SHARE", 10.0)  # farther than any pixel: none fixed
    free = cluttered_cut(image)
    assert settled.how == free.how == "grabcut"
    got, ref = settled.mask > 0.5, free.mask > 0.5
    assert _iou(got, truth) > 0.95
    assert _iou(got, ref) > 0.995


def test_settle_fixes_only_what_lies_far_from_the_outline() -> None:
    """Far pixels become sure on the side they were on; the outline's neighbourhood and the
    sure labels already there stay as they were."""
    mask = np.full((60, 80), cv2.GC_PR_BGD, np.uint8)
    mask[10:50, 10:50] = cv2.GC_PR_FGD
    mask[:2] = cv2.GC_BGD
    before = mask.copy()
    cluttered._settle(mask, 5.0)
    assert mask[30, 30] == cv2.GC_FGD  # 20 px inside
    assert mask[30, 70] == cv2.GC_BGD  # 20 px outside
    assert mask[30, 12] == cv2.GC_PR_FGD and mask[30, 52] == cv2.GC_PR_BGD  # near the outline
    assert (mask[:2] == cv2.GC_BGD).all()
    assert ((mask & 1) == (before & 1)).all()  # no pixel changed sides
