"""`classical`: the weight-free default engine — no model, no download, CPU or GPU.

Studio shots (plain, gradient or vignetted backdrops) are matted against a background model
learnt from the border, which gives real partial alpha for soft edges, strands and glass.
When the border does not look like a smooth backdrop (texture, clutter), the engine says so
and segments with iterative colour models instead (`cluttered`), then solves the edge band
with the shared band solver.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .background import fit_border_model
from .base import Engine, EngineError, Matte, RGBImage
from .cluttered import cluttered_coarse
from .refine import default_band, estimate_foreground, refine
from .studio import studio_alpha

__all__ = ["ClassicalEngine"]


class ClassicalEngine(Engine):
    name = "classical"
    max_batch_size = 4

    def __init__(self) -> None:
        self.last_paths: list[str] = []
        """Which path each image of the last batch took ('studio' or 'cluttered')."""

    def predict(self, images: Sequence[RGBImage]) -> list[Matte]:
        self.last_paths = []
        return [self._one(im) for im in images]

    def _one(self, image: RGBImage) -> Matte:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EngineError(f"expected H×W×3 uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if h < 4 or w < 4:
            raise EngineError(f"image too small to matte: {w}x{h}")
        band = default_band(h, w)
        model = fit_border_model(image)
        if model.holds:
            self.last_paths.append("studio")
            res = studio_alpha(image, model, band)
            alpha = np.clip(res.alpha, 0.0, 1.0).astype(np.float32)
            return Matte(alpha=alpha, foreground=estimate_foreground(image, alpha))
        self.last_paths.append("cluttered")
        coarse = cluttered_coarse(image)
        return refine(image, coarse, band=band)
