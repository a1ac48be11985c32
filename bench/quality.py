"""Quality benchmark: the `classical` engine against a naive baseline on composites with exact
ground truth (`../shared/quality-set`, or env QUALITY_SET).

The baseline is what anyone would write first (distance to the border's median colour, Otsu
threshold), so the ratio says how much the real engine buys per background kind. Targets come
from the issue: mean MSE ≤ 0.003 on plain and gradient backgrounds, and overall mean MSE ≤ 0.3
of the baseline's.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.cluttered import border_distance_mask
from shared.imaging import decode_alpha, decode_rgb

__all__ = ["ItemResult", "default_quality_dir", "evaluate", "naive_alpha", "run"]

REPO = Path(__file__).resolve().parent.parent
STUDIO_TARGET_MSE = 0.003
OVERALL_TARGET_RATIO = 0.3
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


def report(results: list[ItemResult], quality_dir: Path) -> str:
    c = [r for r in results if r.method == "classical"]
    n = [r for r in results if r.method == "naive"]
    studio = _mean(r.mse for r in c if r.background in ("plain", "gradient"))
    overall_c, overall_n = _mean(r.mse for r in c), _mean(r.mse for r in n)
    ratio = overall_c / max(overall_n, 1e-12)
    ok1, ok2 = studio <= STUDIO_TARGET_MSE, ratio <= OVERALL_TARGET_RATIO
    lines = [
        "## Matting quality (`classical` vs naive baseline)",
        "",
        f"{len(c)} composites with exact ground truth from `{quality_dir.name}`; alpha in [0, 1], "
        "MSE = mean (α−g)² over the whole image, SAD = Σ|α−g| / 1000. Naive baseline: Lab "
        "distance to the border's median colour, Otsu threshold.",
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


def run(quality_dir: Path | None = None) -> str:
    """The markdown section for BENCHMARKS.md."""
    qdir = quality_dir or default_quality_dir()
    if not (qdir / "manifest.csv").is_file():
        return f"## Matting quality\n\nSkipped: no quality set at `{qdir}` (set QUALITY_SET).\n"
    engine = ClassicalEngine()
    engine.load()

    def classical(image: npt.NDArray[np.uint8]) -> F32:
        return engine.predict([image])[0].alpha

    # Warm-up outside the timing: numba kernels compile on first use.
    classical(np.full((64, 64, 3), 200, np.uint8))
    return report(evaluate(qdir, {"classical": classical, "naive": naive_alpha}), qdir)


if __name__ == "__main__":
    sys.stdout.write(run(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
