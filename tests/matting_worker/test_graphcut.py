"""GrabCut's frozen-model cut with the max-flow over the undecided pixels only
(`engines/graphcut.py`) against OpenCV's `grabCut`, which cuts a graph of the whole frame, on
generated scenes."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from matting_worker.engines import cluttered, graphcut
from tests.matting_worker.test_cluttered import _scene

U8 = npt.NDArray[np.uint8]
Models = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _first_round(image: U8, truth: npt.NDArray[np.bool_]) -> tuple[U8, Models]:
    """A mask and colour models as the cluttered path has them after OpenCV's first round
    and the settling: sure backdrop on the frame, a rough object guess, far pixels fixed."""
    mask = np.full(truth.shape, cv2.GC_PR_BGD, np.uint8)
    guess = cv2.dilate(truth.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    mask[guess] = cv2.GC_PR_FGD
    cluttered._frame(mask)
    models = cluttered._models()
    cv2.setRNGSeed(0)
    cluttered._cv.grabCut(image, mask, None, *models, 1, cv2.GC_INIT_WITH_MASK)
    cluttered._settle(mask, 12.0)
    return mask, models


@pytest.mark.parametrize("seed", [3, 5])
def test_cut_of_a_settled_frame_gives_opencvs_labels(seed: int) -> None:
    """A frame after the first round and the settling (fixed pixels far from the outline, a
    wide undecided ring): the same labels as OpenCV's frame-wide cut with the same frozen
    models, and the models untouched."""
    image, truth = _scene(240, 180, seed)
    mask, (bgd, fgd) = _first_round(image, truth)
    free = (mask == cv2.GC_PR_BGD) | (mask == cv2.GC_PR_FGD)
    assert 0.1 < free.mean() < 0.9  # a real mix of fixed and undecided pixels
    ref = mask.copy()
    cluttered._cv.grabCut(image, ref, None, bgd.copy(), fgd.copy(), 1, cv2.GC_EVAL_FREEZE_MODEL)
    before = bgd.copy(), fgd.copy()
    graphcut.cut(image, mask, bgd, fgd, graphcut.contrast(image))
    np.testing.assert_array_equal(mask, ref)
    assert ((mask & 1) != (truth.astype(np.uint8))).mean() < 0.02  # and it is the object
    np.testing.assert_array_equal(bgd, before[0])  # frozen: the cut only reads them
    np.testing.assert_array_equal(fgd, before[1])


def test_band_cut_with_frozen_models_gives_opencvs_labels() -> None:
    """The cluttered path's band cut: a thin undecided band between sure object and sure
    backdrop, the models frozen (`GC_EVAL_FREEZE_MODEL`): the same labels as OpenCV's, whose
    graph spans the whole frame; the edge weights use the whole frame's contrast."""
    image, truth = _scene(320, 240, 4)
    _, (bgd, fgd) = _first_round(image, truth)
    up = truth.astype(np.uint8)
    k = np.ones((7, 7), np.uint8)
    mask = np.where(up > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[cv2.erode(up, k) > 0] = cv2.GC_FGD
    mask[cv2.erode(1 - up, k) > 0] = cv2.GC_BGD
    ref = mask.copy()
    cluttered._cv.grabCut(image, ref, None, bgd.copy(), fgd.copy(), 1, cv2.GC_EVAL_FREEZE_MODEL)
    before = bgd.copy(), fgd.copy()
    graphcut.cut(image, mask, bgd, fgd, graphcut.contrast(image))
    np.testing.assert_array_equal(mask, ref)
    np.testing.assert_array_equal(bgd, before[0])  # frozen: the cut only reads them
    np.testing.assert_array_equal(fgd, before[1])


def test_two_stage_cut_is_opencvs_band_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole cluttered cut with the band cut made by OpenCV instead: the same mask."""
    image, _ = _scene(560, 420)
    ours = cluttered.cluttered_cut(image)
    monkeypatch.setattr(cluttered, "BAND_OWN_CUT", False)
    theirs = cluttered.cluttered_cut(image)
    assert ours.how == theirs.how == "grabcut"
    np.testing.assert_array_equal(ours.mask, theirs.mask)
    assert ours.agreement == theirs.agreement


def test_contrast_is_opencvs_mean_step() -> None:
    """β = 1 / (2 × mean squared 8-neighbour colour step); 0 on a flat image."""
    image = np.zeros((2, 2, 3), np.uint8)
    assert graphcut.contrast(image) == 0.0
    image[0, 0] = (3, 0, 0)  # steps of 9 to its left/up/diagonal neighbours' pairs
    # Pairs in a 2×2 image: 2 left, 2 up, 1 upper-left, 1 upper-right = 6; the lit pixel is
    # in three of them (right, below, below-right), each |Δ|² = 9.
    assert graphcut.contrast(image) == pytest.approx(1.0 / (2.0 * 27.0 / 6.0))


def test_fixed_pixels_stay_and_nothing_undecided_is_a_no_op() -> None:
    image, truth = _scene(160, 120, 6)
    mask, (bgd, fgd) = _first_round(image, truth)
    fixed = (mask == cv2.GC_BGD) | (mask == cv2.GC_FGD)
    before = mask.copy()
    beta = graphcut.contrast(image)
    graphcut.cut(image, mask, bgd, fgd, beta)
    np.testing.assert_array_equal(mask[fixed], before[fixed])
    assert set(np.unique(mask[~fixed]).tolist()) <= {cv2.GC_PR_BGD, cv2.GC_PR_FGD}
    sure = np.where(truth, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    same = sure.copy()
    graphcut.cut(image, same, bgd, fgd, beta)
    np.testing.assert_array_equal(same, sure)


def test_colour_no_model_explains_is_decided_by_the_other_model() -> None:
    """An object model with every weight 0 (what GrabCut's learning leaves when a side had no
    pixels): every colour infinitely unlikely as object. The cost is capped, not infinite, so
    the max-flow stays finite and every undecided pixel goes to the backdrop. (OpenCV's
    infinite terminal links make its labels arbitrary there: it is not a reference.)"""
    image, truth = _scene(160, 120, 7)
    _, (bgd, fgd) = _first_round(image, truth)
    fgd[0, :graphcut.COMPONENTS] = 0.0
    mask = np.full(truth.shape, cv2.GC_PR_FGD, np.uint8)
    cluttered._frame(mask)
    graphcut.cut(image, mask, bgd, fgd, graphcut.contrast(image))
    assert not (mask & 1).any()
    assert (mask[5:-5, 5:-5] == cv2.GC_PR_BGD).all()
