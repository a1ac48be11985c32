"""The studio kinds over many seeds of the independent generator (issue 16, point 1).

The quality section prints the third set on two seeds; a rule fitted to those can still fail
on the next seed's touching mug or faint lamp. This sweep generates the studio kinds
(`third_set.STUDIO_KINDS`) of many seeds and reports the weight-free engine's mean MSE per
kind, per seed and over all of them, with the worst cut-outs and the confidence each got —
the check every studio-path change of issue 16 was measured with.

`python -m bench studio_sweep` (seeds `SWEEP_SEEDS`; `BENCH_SWEEP_SEEDS=11,12,…` changes
them, `BENCH_SWEEP_COUNT` the images per seed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bench import third_set
from bench.quality import ClassicalMethod, ItemResult, seeds_from_env, third_results
from matting_worker.engines.classical import ClassicalEngine

__all__ = ["STUDIO_TARGET", "SWEEP_COUNT", "SWEEP_SEEDS", "run", "sweep", "sweep_report"]

SWEEP_SEEDS = (11, 12, 14, *range(16, 34))
"""Twenty-one seeds: the bench's two, and every seed issue 16's studio work was checked on."""
SWEEP_COUNT = 40
"""Images 0 … 39 of each seed: five of each studio kind (the photo-like ones are skipped)."""
STUDIO_TARGET = 0.003
"""Issue 16's goal for the studio kinds' mean MSE."""
WORST = 10
"""Cut-outs listed by name, worst first."""


def sweep(seeds: Sequence[int], count: int = SWEEP_COUNT,
          engine: ClassicalEngine | None = None) -> list[ItemResult]:
    """The classical engine on the studio kinds of images 0 … count − 1 of every seed; each
    result's name carries its seed (`s17/t3_005_touching_superellipse`)."""
    if engine is None:
        engine = ClassicalEngine()
        engine.load()
    return third_results(seeds, {"classical": ClassicalMethod(engine)}, count,
                         third_set.STUDIO_KINDS)


def _mean(rs: Sequence[ItemResult]) -> float:
    return float(np.mean([r.mse for r in rs])) if rs else float("nan")


def sweep_report(results: Sequence[ItemResult], seeds: Sequence[int]) -> str:
    """The markdown section: per kind, per seed, the worst cut-outs, and the verdict."""
    kinds = [k for k in third_set.STUDIO_KINDS if any(r.kind == k for r in results)]
    lines = [
        "## Studio kinds over many seeds (issue 16, point 1)",
        "",
        f"{len(results)} studio shots of `bench.third_set`, seeds "
        f"{', '.join(str(s) for s in seeds)} (the kinds {', '.join(kinds)}; "
        "`python -m bench studio_sweep`, `BENCH_SWEEP_SEEDS` changes the seeds).",
        "",
        "| kind | n | mean MSE | median MSE | worst | shots over 0.01 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in kinds:
        rs = [r for r in results if r.kind == k]
        m = [r.mse for r in rs]
        lines.append(f"| {k} | {len(rs)} | {_mean(rs):.4f} | {float(np.median(m)):.4f} | "
                     f"{max(m):.4f} | {sum(x > 0.01 for x in m)} |")
    lines += [f"| **all** | {len(results)} | {_mean(results):.4f} | "
              f"{float(np.median([r.mse for r in results])):.4f} | "
              f"{max(r.mse for r in results):.4f} | {sum(r.mse > 0.01 for r in results)} |", ""]
    per_seed = [f"{s}: {_mean([r for r in results if r.name.startswith(f's{s}/')]):.4f}"
                for s in seeds]
    lines += ["Mean per seed: " + "; ".join(per_seed) + ".", ""]
    lines += ["| worst cut-outs | route | MSE | confidence |", "|---|---|---:|---:|"]
    for r in sorted(results, key=lambda r: -r.mse)[:WORST]:
        conf = "" if r.confidence is None else f"{r.confidence:.2f}"
        lines.append(f"| {r.name} | {r.route} | {r.mse:.4f} | {conf} |")
    mean = _mean(results)
    met = "yes" if mean <= STUDIO_TARGET else "NO"
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|",
              f"| mean MSE, every studio kind, every seed | {mean:.4f} | ≤ {STUDIO_TARGET} "
              f"| {met} |", ""]
    return "\n".join(lines)


def run() -> str:
    """The section for BENCHMARKS.md (`python -m bench studio_sweep`)."""
    seeds = seeds_from_env("BENCH_SWEEP_SEEDS", SWEEP_SEEDS)
    count = int(os.environ.get("BENCH_SWEEP_COUNT", str(SWEEP_COUNT)))
    return sweep_report(sweep(seeds, count), seeds)
