"""`classical`: the weight-free default engine (first version: border model + threshold)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .base import Engine, Matte, RGBImage

__all__ = ["ClassicalEngine"]


class ClassicalEngine(Engine):
    name = "classical"
    max_batch_size = 4

    def predict(self, images: Sequence[RGBImage]) -> list[Matte]:
        return [Matte(alpha=self._one(im)) for im in images]

    @staticmethod
    def _one(image: RGBImage) -> np.ndarray:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
        border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        dist = np.linalg.norm(lab - np.median(border, axis=0), axis=2)
        d8 = np.clip(dist * (255.0 / max(float(dist.max()), 1e-6)), 0, 255).astype(np.uint8)
        _, mask = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (5, 5), 0)
        out: np.ndarray = np.clip(alpha, 0.0, 1.0).astype(np.float32)
        return out
