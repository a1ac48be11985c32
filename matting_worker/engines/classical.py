"""`classical`: the weight-free default engine — no model, no download, CPU or GPU.

Studio shots (plain, gradient or vignetted backdrops) are matted against a background model
learnt from the border, which gives real partial alpha for soft edges, strands and glass.
When the border does not look like a smooth backdrop (texture, clutter), the engine says so
and segments with iterative colour models instead (`cluttered`), then solves the edge band
with the shared band solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from matting_worker.engines.background import fit_border_model, misfit_share, refit_backdrop
from matting_worker.engines.base import Engine, EngineError, Matte, RGBImage
from matting_worker.engines.cluttered import cluttered_cut
from matting_worker.engines.confidence import Signals, cluttered_signals, score, studio_signals
from matting_worker.engines.guided import guided_upsample
from matting_worker.engines.refine import (
    default_band,
    estimate_foreground,
    solve_trimap,
    trimap_from_coarse,
)
from matting_worker.engines.shadow import fit_shadow, shaded_model
from matting_worker.engines.studio import LOW_CONTRAST_FLOOR, studio_alpha
from matting_worker.engines.threads import one_thread

__all__ = [
    "REFIT_CLEARANCE", "REFIT_KEEPS", "SOLVE_RTOL", "SOLVE_SIDE", "WORK_SIDE", "ClassicalEngine",
]

WORK_SIDE = 1024
"""Longest side the engine reasons at; larger images are matted there and guided back up."""
SOLVE_SIDE = 140
"""Longest side of the closed-form solve on the cluttered path (its band can be wide); the
guided filter (radius 2 at this size) carries the edge back to full size along the image's
own colours. 480 until issue 16's speed work, then 360, then 300. 140 in the seventh speed
pass: the solve 0.05 → 0.01 CPU s a photo, and the error *fell* on every set (mean over the
111 cluttered-path images of ten sets 0.07874 → 0.07801, over 71 of six sets never tuned on
0.11084 → 0.11000): the guided filter's colour-line windows, wider in full-size pixels, fit
a textured backdrop's edge better than the finer solve did; only hard edges that were already
right (MSE ≤ 0.0001) moved up by a few 1e-5."""
REFIT_CLEARANCE = 2
"""How far (edge bands) from the first cut the backdrop's misfit is read before a refit
(`background.refit_backdrop`): the cut's soft edge and a shadow's last levels stay out."""
REFIT_KEEPS = 0.5
"""The cut after a refit must keep at least this share of the first cut's pixels, else the
refit is dropped. A faint object found only in part leaves its rest in the misfit that the
refit reads, and the refitted surface then takes the whole object in (a grey shape on a grey
sweep: a third of it found, then none). The misfit beyond the cut that set the refit off
(`background.misfit_share`) is then the confidence's `unexplained` share."""
SOLVE_RTOL = 1e-5
"""Where the cluttered path's closed-form solve stops (relative residual; pymatting's default
1e-7, `refine.DEFAULT_RTOL`). Issue 16's third speed pass: on the bundled photos the alphas
move by at most 0.0014 (a third of one 8-bit step) and the solve takes about a tenth less."""


class ClassicalEngine(Engine):
    name = "classical"
    max_batch_size = 4
    falls_back = True

    def __init__(self, *, keep_shadows: bool = False) -> None:
        self.keep_shadows = keep_shadows
        """Keep soft contact shadows in the cut-out (default: they are backdrop,
        `matting_worker.engines.shadow`)."""
        self.last_paths: list[str] = []
        """Which path each image of the last batch took ('studio' or 'cluttered')."""
        self.last_signals: list[Signals] = []
        """What each image's confidence in the last batch was made of
        (`matting_worker.engines.confidence.Signals`), for a bench to print."""

    def predict(self, images: Sequence[RGBImage]) -> list[Matte]:
        self.last_paths = []
        self.last_signals = []
        # Its BLAS and OpenCV calls are small: helper threads only spin (`engines.threads`).
        with one_thread():
            return [self._one(im) for im in images]

    def _one(self, image: RGBImage) -> Matte:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EngineError(f"expected H×W×3 uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if h < 4 or w < 4:
            raise EngineError(f"image too small to matte: {w}x{h}")
        scale = min(1.0, WORK_SIDE / max(h, w))
        if scale >= 1.0:
            alpha, confidence = self._alpha(image)
        else:
            # Work at bounded size; the guided filter carries the matte back along the
            # full-resolution edges, so time stays flat in the megapixels.
            size = (max(4, round(w * scale)), max(4, round(h * scale)))
            small = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
            alpha_small, confidence = self._alpha(small)
            alpha = guided_upsample(
                small.astype(np.float32) / 255.0,
                alpha_small,
                image.astype(np.float32) / 255.0,
                radius=1,
                eps=1e-4,
            )
            alpha[alpha < 0.004] = 0.0
            alpha[alpha > 0.996] = 1.0
        return Matte(alpha=alpha, foreground=estimate_foreground(image, alpha),
                     confidence=confidence, route=self.last_paths[-1])

    def _alpha(self, image: RGBImage) -> tuple[npt.NDArray[np.float32], float]:
        """The matte at working size and the engine's confidence in it
        (`matting_worker.engines.confidence`)."""
        h, w = image.shape[:2]
        band = default_band(h, w)
        model = fit_border_model(image)
        if model.holds:
            self.last_paths.append("studio")
            res = studio_alpha(image, model, band)
            shadow = None if self.keep_shadows else fit_shadow(image, model, res.coarse, band)
            if shadow is not None:
                model = shaded_model(model, shadow)
                res = studio_alpha(image, model, band)
            # Beyond the cut the averaged image should lie on the surface; where it strays as
            # far as the faint test's sure level, the border's cubic does not follow the
            # backdrop inside the frame (a spotlight), and faint objects drown in its misfit.
            reach = 2 * REFIT_CLEARANCE * band + 1
            away = cv2.dilate(res.coarse.astype(np.uint8), np.ones((reach, reach), np.uint8)) == 0
            refit = refit_backdrop(image, model, away, LOW_CONTRAST_FLOOR)
            unexplained = 0.0
            if refit is not None:
                again = studio_alpha(image, refit, band)
                kept = int(np.count_nonzero(again.coarse & res.coarse))
                if kept >= REFIT_KEEPS * int(np.count_nonzero(res.coarse)):
                    model, res = refit, again
                else:  # the misfit the refit would have followed stays a doubt on this cut
                    unexplained = misfit_share(image, model, away, LOW_CONTRAST_FLOOR)
            alpha = np.clip(res.alpha, 0.0, 1.0).astype(np.float32)
            return alpha, self._scored(studio_signals(image, model, res, alpha, unexplained))
        self.last_paths.append("cluttered")
        cut = cluttered_cut(image)
        alpha = solve_trimap(image, trimap_from_coarse(cut.mask, band), max_side=SOLVE_SIDE,
                             rtol=SOLVE_RTOL)
        alpha = np.clip(alpha, 0.0, 1.0).astype(np.float32)
        return alpha, self._scored(cluttered_signals(image, cut, alpha))

    def _scored(self, sig: Signals) -> float:
        self.last_signals.append(sig)
        return score(sig)
