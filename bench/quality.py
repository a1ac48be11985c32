"""Quality benchmark: the `classical` engine against a naive baseline on composites with exact
ground truth: the team's set (`../shared/quality-set`, or env QUALITY_SET) and a held-out set
generated the same way with other shapes and textures (`bench.heldout`), so tuning to the 36
fixed files would show as a gap between the two tables.

The baseline is what anyone would write first (distance to the border's median colour, Otsu
threshold), so the ratio says how much the real engine buys per background kind. Targets come
from the issue: mean MSE ≤ 0.003 on plain and gradient backgrounds, and overall mean MSE ≤ 0.3
of the baseline's.
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.heldout import generate
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.cluttered import border_distance_mask
from shared.imaging import decode_alpha, decode_rgb

__all__ = ["ItemResult", "default_quality_dir", "evaluate", "naive_alpha", "run"]

REPO = Path(__file__).resolve().parent.parent
STUDIO_TARGET_MSE = 0.003
OVERALL_TARGET_RATIO = 0.3
HELDOUT_SEEDS = (1, 2)
"""Seeds of the generated held-out set: 36 composites each."""
F32 = npt.NDArray[np.float32]


def default_quality_dir() -> Path:
    """QUALITY_SET, else the first `shared/quality-set` beside the checkout or above it."""
    env = os.environ.get("QUALITY_SET")
    if env:
        return Path(env)
    for parent in REPO.parents:
        cand = parent / "shared" / "quality-set"
        if (cand / "manifest.csv").is_file():
            return cand
    return REPO.parent / "shared" / "quality-set"


def naive_alpha(image: npt.NDArray[np.uint8]) -> F32:
    """Distance in Lab to the border's median colour, Otsu threshold: the baseline. It is the
    same function the engine's cluttered path keeps as its floor ("never worse than a plain
    threshold"), so the benchmark measures against exactly that."""
    return border_distance_mask(image)


@dataclass
class ItemResult:
    name: str
    background: str
    edge: str
    glass: bool
    method: str
    mse: float
    sad: float
    seconds: float


def _score(alpha: F32, gt: F32) -> tuple[float, float]:
    diff = alpha.astype(np.float64) - gt.astype(np.float64)
    return float(np.mean(diff**2)), float(np.abs(diff).sum() / 1000.0)


def evaluate(quality_dir: Path, methods: dict[str, Callable[[npt.NDArray[np.uint8]], F32]]
             ) -> list[ItemResult]:
    rows = list(csv.DictReader((quality_dir / "manifest.csv").open()))
    out: list[ItemResult] = []
    for row in rows:
        image = decode_rgb(quality_dir / row["image"])
        gt = decode_alpha(quality_dir / row["gt"])
        for method, fn in methods.items():
            t0 = time.perf_counter()
            alpha = fn(image)
            dt = time.perf_counter() - t0
            mse, sad = _score(alpha, gt)
            out.append(ItemResult(row["name"], row["background"], row["edge"],
                                  row["glass"] == "1", method, mse, sad, dt))
    return out


def _mean(xs: Iterable[float]) -> float:
    v = list(xs)
    return float(np.mean(v)) if v else float("nan")


def _table(results: list[ItemResult], key: Callable[[ItemResult], str], title: str) -> list[str]:
    groups = sorted({key(r) for r in results})
    lines = [f"| {title} | n | classical MSE | naive MSE | ratio | classical SAD | naive SAD |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for g in [*groups, "all"]:
        sel = [r for r in results if g == "all" or key(r) == g]
        c = [r for r in sel if r.method == "classical"]
        n = [r for r in sel if r.method == "naive"]
        cm, nm = _mean(r.mse for r in c), _mean(r.mse for r in n)
        name = f"**{g}**" if g == "all" else g
        lines.append(f"| {name} | {len(c)} | {cm:.5f} | {nm:.5f} | {cm / max(nm, 1e-12):.2f} | "
                     f"{_mean(r.sad for r in c):.2f} | {_mean(r.sad for r in n):.2f} |")
    return lines


def report(results: list[ItemResult], title: str, source: str) -> str:
    c = [r for r in results if r.method == "classical"]
    n = [r for r in results if r.method == "naive"]
    studio = _mean(r.mse for r in c if r.background in ("plain", "gradient"))
    ratio = _mean(r.mse for r in c) / max(_mean(r.mse for r in n), 1e-12)
    ok1, ok2 = studio <= STUDIO_TARGET_MSE, ratio <= OVERALL_TARGET_RATIO
    lines = [
        f"### {title}",
        "",
        f"{len(c)} composites with exact ground truth: {source}.",
        "",
        *_table(results, lambda r: r.background, "background"),
        "",
        *_table(results, lambda r: r.edge, "edge"),
        "",
        *_table(results, lambda r: "glass" if r.glass else "opaque", "parts"),
        "",
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        f"| mean MSE, plain + gradient | {studio:.5f} | ≤ {STUDIO_TARGET_MSE} | "
        f"{'yes' if ok1 else 'NO'} |",
        f"| overall MSE / naive | {ratio:.3f} | ≤ {OVERALL_TARGET_RATIO} | "
        f"{'yes' if ok2 else 'NO'} |",
        "",
        f"Seconds per image (mean, this machine's CPU): classical "
        f"{_mean(r.seconds for r in c):.2f} s, naive {_mean(r.seconds for r in n):.3f} s.",
        "",
        "<details><summary>per image</summary>",
        "",
        "| image | classical MSE | naive MSE | classical s |",
        "|---|---:|---:|---:|",
    ]
    naive_by = {r.name: r for r in n}
    for r in c:
        lines.append(f"| {r.name} | {r.mse:.5f} | {naive_by[r.name].mse:.5f} | {r.seconds:.2f} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


HEADER = """## Matting quality (`classical` vs naive baseline)

Alpha in [0, 1]; MSE = mean (α−g)² over the whole image, SAD = Σ|α−g| / 1000. Naive baseline:
Lab distance to the border's median colour, Otsu threshold (the same function the engine keeps
as its floor on cluttered images). Targets: mean MSE ≤ 0.003 on plain and gradient backdrops,
overall mean MSE ≤ 0.3 of the baseline's, on the team's set and on a held-out set.
"""


def run(quality_dir: Path | None = None, seeds: Sequence[int] = HELDOUT_SEEDS) -> str:
    """The markdown section for BENCHMARKS.md: the team's quality set, then a held-out set
    generated the same way with other shapes and textures (`bench.heldout`)."""
    qdir = quality_dir or default_quality_dir()
    engine = ClassicalEngine()
    engine.load()

    def classical(image: npt.NDArray[np.uint8]) -> F32:
        return engine.predict([image])[0].alpha

    # Warm-up outside the timing: numba kernels compile on first use.
    classical(np.full((64, 64, 3), 200, np.uint8))
    methods: dict[str, Callable[[npt.NDArray[np.uint8]], F32]] = {
        "classical": classical, "naive": naive_alpha}
    parts = [HEADER]
    if (qdir / "manifest.csv").is_file():
        parts.append(report(evaluate(qdir, methods), "The team's quality set",
                            f"`{qdir.name}`"))
    else:
        parts.append(f"Team set skipped: no quality set at `{qdir}` (set QUALITY_SET).\n")
    with tempfile.TemporaryDirectory() as tmp:
        held: list[ItemResult] = []
        for seed in seeds:
            held += evaluate(generate(Path(tmp) / str(seed), seed=seed), methods)
    seeds_text = ", ".join(str(s) for s in seeds)
    parts.append(report(held, "Held-out set (generated)",
                        f"`python -m bench.heldout DIR SEED`, seeds {seeds_text}: stars, hearts, "
                        "crescents, bottles, polygons, leaves, pairs of blobs; procedural "
                        "pebble, cloud, stripe and brick backdrops; a third of the objects "
                        "printed with photo texture"))
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(run(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
