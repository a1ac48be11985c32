"""Per image: the true MSE, the confidence and each signal it comes from — the table to read
when the confidence ranks a set badly (`python -m bench.confidence_signals OUT.csv`).

Runs the weight-free engine over the team's set (when present), the held-out set (seeds 1
and 2), the third set (seeds 11 and 12) and the photo-like set (seeds 31–33,
`BENCH_PHOTO_SEEDS`) — the sets `make bench` reports — and writes one
CSV row per image: set, name, kind, route, mse, confidence, expected_mse and the fields of
`matting_worker.engines.confidence.Signals`. Sorting it by confidence shows which images the
score gets wrong; sorting by MSE shows which signal the worst images share.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from dataclasses import astuple, fields
from pathlib import Path

from bench import third_set
from bench.heldout import generate
from bench.quality import (
    HELDOUT_SEEDS,
    THIRD_COUNT,
    THIRD_SEEDS,
    ClassicalMethod,
    ItemResult,
    Method,
    default_quality_dir,
    evaluate,
    photo_seeds_from_env,
    photo_set,
)
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.confidence import Signals

__all__ = ["rows", "run"]

COLUMNS = ["set", "name", "kind", "route", "mse", "confidence", "expected_mse",
           *(f.name for f in fields(Signals))]


def rows(tag: str, results: list[ItemResult]) -> list[list[object]]:
    """The CSV rows of one set's classical results."""
    out: list[list[object]] = []
    for r in results:
        if r.method != "classical" or r.signals is None:
            continue
        out.append([tag, r.name, r.kind or r.background, r.route, f"{r.mse:.6f}",
                    r.confidence, f"{r.signals.expected_mse():.6f}",
                    *(f"{v:.6f}" if isinstance(v, float) else v for v in astuple(r.signals))])
    return out


def run(out: Path) -> Path:
    engine = ClassicalEngine()
    engine.load()
    methods: dict[str, Method] = {"classical": ClassicalMethod(engine)}
    table: list[list[object]] = []
    qdir = default_quality_dir()
    if (qdir / "manifest.csv").is_file():
        table += rows("team", evaluate(qdir, methods))
    with tempfile.TemporaryDirectory() as tmp:
        for seed in HELDOUT_SEEDS:
            table += rows(f"held-out {seed}",
                          evaluate(generate(Path(tmp) / f"h{seed}", seed=seed), methods))
        for seed in THIRD_SEEDS:
            d = third_set.generate(Path(tmp) / f"t{seed}", seed, THIRD_COUNT)
            table += rows(f"third {seed}", evaluate(d, methods))
    for seed in photo_seeds_from_env():
        table += rows(f"photo-like {seed}", photo_set([seed], methods))
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(table)
    return out


if __name__ == "__main__":
    print(run(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("confidence-signals.csv")))
