"""The bench's confidence figures (issue 16): the tenth's share, the best share any ranking
could reach, and the per-image signal rows of `bench.confidence_signals`."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.confidence_signals import COLUMNS, rows
from bench.quality import (
    ItemResult,
    _confidence_rows,
    best_decile_share,
    confidence_figures,
    evaluate,
)
from matting_worker.engines.base import Matte
from matting_worker.engines.classical import ClassicalEngine


def _result(mse: float, conf: float) -> ItemResult:
    return ItemResult("x", "plain", "", False, "classical", mse, 0.0, 0.0, confidence=conf)


def test_best_share_is_the_ceiling_of_the_tenth() -> None:
    """Ten images, one holding a quarter of the error: the least confident tenth (one image)
    can hold at most 25 %, reached when that image is the least confident — and a perfect
    ranking gives Spearman 1."""
    mse = [0.25] + [0.75 / 9] * 9
    mse[1] += 0.001  # no ties in the ranks
    perfect = [_result(m, 1.0 - m) for m in mse]
    rho, share, n = confidence_figures(perfect)
    assert n == 10 and rho == pytest.approx(1.0)
    assert share == pytest.approx(best_decile_share(perfect)) == pytest.approx(0.25, abs=0.01)
    backwards = [_result(m, m) for m in mse]
    assert confidence_figures(backwards)[1] < best_decile_share(backwards)


def test_a_tenth_out_of_reach_is_called_so() -> None:
    """Issue 16's fifth pass: where even the largest-error tenth holds under 40 %, the row
    says the target is out of reach for the set; where the ceiling is above it and the
    ranking misses, a plain NO; a perfect ranking of a set whose errors sit in one image, yes."""
    flat = [0.25] + [0.75 / 9 + i * 1e-4 for i in range(9)]  # ceiling 25 %
    peaked = [0.6] + [0.4 / 9 + i * 1e-4 for i in range(9)]  # ceiling 60 %
    out_of_reach = [_result(m, 1.0 - m) for m in flat]
    perfect = [_result(m, 1.0 - m) for m in peaked]
    backwards = [_result(m, m) for m in peaked]
    rows_ = _confidence_rows([("flat", out_of_reach), ("peaked", perfect), ("bad", backwards)])
    verdicts = [r.rsplit("|", 2)[1].strip() for r in rows_[2:]]
    assert verdicts == ["NO (tenth out of reach: best possible under 40%)", "yes", "NO"]


def test_signal_rows_of_a_real_set(tmp_path: Path) -> None:
    """Two real composites through `evaluate`: every classical row carries the signals its
    confidence came from, and the CSV row has one value per column."""
    d = tmp_path / "set"
    (d / "images").mkdir(parents=True)
    (d / "gt").mkdir()
    h, w = 120, 160
    gt = np.zeros((h, w), np.uint8)
    cv2.circle(gt, (80, 60), 30, 255, -1)
    lines = ["name,image,gt,kind"]
    for i, back in enumerate(((230, 226, 220), (200, 210, 235))):
        img = np.where(gt[..., None] > 0, np.array([40, 70, 150], np.uint8),
                       np.array(back, np.uint8)).astype(np.uint8)
        cv2.imwrite(str(d / "images" / f"im{i}.png"), img[..., ::-1])
        cv2.imwrite(str(d / "gt" / f"im{i}.png"), gt)
        lines.append(f"im{i},images/im{i}.png,gt/im{i}.png,plain")
    (d / "manifest.csv").write_text("\n".join(lines) + "\n")
    engine = ClassicalEngine()

    def classical(image: np.ndarray) -> Matte:
        return engine.predict([image])[0]

    results = evaluate(d, {"classical": classical})
    got = rows("t", results)
    assert len(got) == 2 and all(len(r) == len(COLUMNS) for r in got)
    for r, row in zip(results, got, strict=True):
        assert r.signals is not None and not r.signals.cluttered
        assert float(row[COLUMNS.index("expected_mse")]) == pytest.approx(
            r.signals.expected_mse(), abs=1e-6)
    out = tmp_path / "s.csv"
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *got])
    assert [r["name"] for r in csv.DictReader(out.open())] == ["im0", "im1"]
