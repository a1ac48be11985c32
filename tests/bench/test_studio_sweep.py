"""The many-seed sweep of the studio kinds (`bench.studio_sweep`)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import third_set
from bench.quality import ItemResult
from bench.studio_sweep import STUDIO_TARGET, sweep, sweep_report


@pytest.fixture(scope="module")
def results() -> list[ItemResult]:
    """Images 0–7 of two seeds: the studio kinds only (six of the eight kinds)."""
    return sweep((3, 4), 8)


def test_only_studio_kinds_and_every_seed_named(results: list[ItemResult]) -> None:
    assert len(results) == 12
    assert {r.kind for r in results} == set(third_set.STUDIO_KINDS)
    assert sum(r.name.startswith("s3/") for r in results) == 6
    assert all(0.0 <= r.mse <= 1.0 and r.confidence is not None for r in results)


def test_report_means_are_the_results(results: list[ItemResult]) -> None:
    text = sweep_report(results, (3, 4))
    assert text.startswith("## ")  # a section of its own in BENCHMARKS.md
    mean = float(np.mean([r.mse for r in results]))
    row = re.search(r"\| \*\*all\*\* \| 12 \| ([0-9.]+) \|", text)
    assert row is not None and abs(float(row.group(1)) - mean) < 6e-5
    for kind in third_set.STUDIO_KINDS:
        kind_mean = float(np.mean([r.mse for r in results if r.kind == kind]))
        got = re.search(rf"\| {kind} \| 2 \| ([0-9.]+) \|", text)
        assert got is not None and abs(float(got.group(1)) - kind_mean) < 6e-5
    worst = max(results, key=lambda r: r.mse)
    assert f"| {worst.name} | {worst.route} | {worst.mse:.4f} |" in text
    verdict = "yes" if mean <= STUDIO_TARGET else "NO"
    assert text.rstrip().endswith(f"| {verdict} |")
    assert "Mean per seed: 3: " in text and "; 4: " in text
