"""The comparison stage's work on pixels: one sheet and the metrics for every model's matte.

`compare` is what the comparison worker calls once per image; it is pure (arrays in, arrays and
numbers out) so it can run off the event loop and be tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from comparison_worker.metrics import free_metrics, gt_metrics
from comparison_worker.sheet import CONFIDENCE_KEY, SheetRow, render_sheet

__all__ = ["Comparison", "compare"]

Alpha = npt.NDArray[np.float32]


@dataclass
class Comparison:
    sheet: npt.NDArray[np.uint8]
    """H×W×3 RGB, written as JPEG by the worker."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per model name: sad/mse/grad/conn where ground truth was given, always
    coverage/uncertain/border_alpha. Keys keep the order the mattes came in."""


def _check_matte(what: str, matte: npt.NDArray[np.floating], hw: tuple[int, int]) -> None:
    if matte.ndim != 2:
        raise ValueError(f"{what} must be a single-channel matte, got shape {matte.shape}")
    if matte.shape != hw:
        raise ValueError(
            f"{what} is {matte.shape[1]}x{matte.shape[0]} but the image is {hw[1]}x{hw[0]}"
        )
    if not np.isfinite(matte).all():
        raise ValueError(f"{what} contains NaN or infinite values")


def compare(
    original: npt.NDArray[np.uint8], mattes: list[tuple[str, Alpha]], gt: Alpha | None,
    confidences: Mapping[str, float] | None = None, size: tuple[int, int] | None = None,
) -> Comparison:
    """Score each (model name, alpha) against gt when given and render one sheet row per model.

    `size`: the image's (height, width) when `original` is a smaller decode of it (a JPEG
    decoded at its sheet tile's scale); the mattes and the metrics are at `size`.

    Raises ValueError (not retryable: the same input fails the same way) for an empty list,
    duplicate model names, or a matte / ground truth whose size differs from the image.
    """
    if original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"original must be H×W×3 RGB, got shape {original.shape}")
    if not mattes:
        raise ValueError("no matte to compare")
    names = [name for name, _ in mattes]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate model names: {names}")
    hw = size or (int(original.shape[0]), int(original.shape[1]))
    for name, alpha in mattes:
        _check_matte(f"matte of {name!r}", alpha, hw)
    if gt is not None:
        _check_matte("ground truth", gt, hw)
        gt = np.clip(gt, 0.0, 1.0).astype(np.float32, copy=False)

    metrics: dict[str, dict[str, float]] = {}
    rows: list[SheetRow] = []
    for name, raw in mattes:
        alpha = np.clip(raw, 0.0, 1.0).astype(np.float32, copy=False)
        m = gt_metrics(alpha, gt) if gt is not None else {}
        m.update(free_metrics(alpha))
        metrics[name] = m
        conf = (confidences or {}).get(name)
        rows.append((name, alpha, m if conf is None else {**m, CONFIDENCE_KEY: conf}))
    return Comparison(sheet=render_sheet(original, rows, gt, hw), metrics=metrics)
