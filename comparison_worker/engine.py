"""The comparison stage's work on pixels: one sheet and the metrics (first version)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Comparison", "compare"]

Alpha = npt.NDArray[np.float32]


@dataclass
class Comparison:
    sheet: npt.NDArray[np.uint8]
    """H×W×3 RGB, written as JPEG by the worker."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Per model name: {'sad', 'mse', ...} where ground truth was given, plus gt-free stats."""


def compare(
    original: npt.NDArray[np.uint8], mattes: list[tuple[str, Alpha]], gt: Alpha | None
) -> Comparison:
    rows = []
    metrics: dict[str, Any] = {}
    for name, alpha in mattes:
        a3 = np.repeat((alpha[..., None] * 255).astype(np.uint8), 3, axis=2)
        rows.append(np.concatenate([original, a3], axis=1))
        m: dict[str, float] = {}
        if gt is not None:
            diff = alpha.astype(np.float64) - gt.astype(np.float64)
            m["sad"] = float(np.abs(diff).sum() / 1000.0)
            m["mse"] = float(np.mean(diff**2))
        metrics[name] = m
    return Comparison(sheet=np.concatenate(rows, axis=0), metrics=metrics)
