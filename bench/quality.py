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
from scipy.stats import spearmanr

from bench import third_set
from bench.heldout import generate
from matting_worker.engines.base import Matte
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.cluttered import border_distance_mask
from matting_worker.engines.confidence import Signals, signals
from shared.imaging import decode_alpha, decode_rgb

__all__ = ["ClassicalMethod", "ItemResult", "Speed", "best_decile_share", "confidence_figures",
           "default_quality_dir", "evaluate", "naive_alpha", "photo_report", "photo_seeds_from_env",
           "photo_set", "run", "seeds_from_env", "speed_ratio", "third_results"]

REPO = Path(__file__).resolve().parent.parent
STUDIO_TARGET_MSE = 0.003
OVERALL_TARGET_RATIO = 0.3
HELDOUT_SEEDS = (1, 2)
"""Seeds of the generated held-out set: 36 composites each."""
THIRD_SEED, THIRD_COUNT = 11, 40
"""The third, independent set (`bench.third_set`): 5 images of each of its 8 kinds."""
THIRD_SEEDS = (THIRD_SEED, 12)
"""Seeds of the third set in `make bench`: a second seed, never looked at while the engine
was tuned on the first, shows whether a gain holds for the generator or only for its images."""
PHOTO_SEEDS, PHOTO_COUNT = (31, 32, 33), 64
"""The photo-like set (`photo_set`): the photo-like kinds of third-set images 0 … 63 of each
seed, 16 per seed, 48 in all, so its least confident tenth is 5 images (one seed's 10 made it
one, where the largest error alone can hold more than 40 %). BENCH_PHOTO_SEEDS overrides the
seeds (comma-separated; empty: no photo-like set)."""
SPEARMAN_TARGET = 0.6
"""Rank correlation between 1 − confidence and the true MSE the issue asks for."""
DECILE_TARGET = 0.4
"""Share of the total error the least confident tenth of the images must hold."""
SPEED_TARGET = 2.0
"""A cluttered photo may take at most this many times a studio shot of the same size."""
SPEED_SIZE = (640, 480)
SPEED_ROUNDS = 7
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
    kind: str = ""
    """The third set's kind (`bench.third_set.KINDS`); '' for the other sets."""
    confidence: float | None = None
    route: str | None = None
    signals: Signals | None = None
    """The weight-free engine's confidence signals, measured on this matte (its own scoring
    measures them at working size, the same for images up to 1024 px a side)."""


def _score(alpha: F32, gt: F32) -> tuple[float, float]:
    diff = alpha.astype(np.float64) - gt.astype(np.float64)
    return float(np.mean(diff**2)), float(np.abs(diff).sum() / 1000.0)


Method = Callable[[npt.NDArray[np.uint8]], Matte]


class ClassicalMethod:
    """The weight-free engine as a bench method, one image a call, keeping the confidence
    signals its score was made of (`ClassicalEngine.last_signals`): only the engine knows the
    studio path's `blend_error`, so `evaluate` takes them from here rather than measuring
    them again on the matte."""

    def __init__(self, engine: ClassicalEngine) -> None:
        self.engine = engine
        self.last_signals: Signals | None = None

    def __call__(self, image: npt.NDArray[np.uint8]) -> Matte:
        matte = self.engine.predict([image])[0]
        self.last_signals = self.engine.last_signals[-1] if self.engine.last_signals else None
        return matte


def evaluate(quality_dir: Path, methods: dict[str, Method]) -> list[ItemResult]:
    """Every method on every image of a manifest (the quality set's columns, or the third
    set's `kind` column)."""
    rows = list(csv.DictReader((quality_dir / "manifest.csv").open()))
    out: list[ItemResult] = []
    for row in rows:
        image = decode_rgb(quality_dir / row["image"])
        gt = decode_alpha(quality_dir / row["gt"])
        kind = row.get("kind", "")
        for method, fn in methods.items():
            t0 = time.perf_counter()
            matte = fn(image)
            dt = time.perf_counter() - t0
            mse, sad = _score(matte.alpha, gt)
            if isinstance(fn, ClassicalMethod):
                sig = fn.last_signals
            else:
                sig = (signals(image, matte.alpha, cluttered=matte.route == "cluttered")
                       if matte.route in ("studio", "cluttered") else None)
            out.append(ItemResult(row["name"], row.get("background", kind),
                                  row.get("edge", ""), row.get("glass") == "1" or kind == "glass",
                                  method, mse, sad, dt, kind, matte.confidence, matte.route, sig))
    return out


def confidence_figures(results: Sequence[ItemResult]) -> tuple[float, float, int]:
    """(Spearman ρ of 1 − confidence against the true MSE, share of the total MSE held by the
    least confident tenth, n) over the classical results that carry a confidence."""
    c = [r for r in results if r.method == "classical" and r.confidence is not None]
    if len(c) < 3:
        return float("nan"), float("nan"), len(c)
    conf = np.array([r.confidence for r in c], np.float64)
    mse = np.array([r.mse for r in c], np.float64)
    rho = float(spearmanr(1.0 - conf, mse).statistic)
    k = max(1, round(len(c) / 10))
    worst = np.argsort(conf, kind="stable")[:k]
    share = float(mse[worst].sum() / max(mse.sum(), 1e-12))
    return rho, share, len(c)


def best_decile_share(results: Sequence[ItemResult]) -> float:
    """The most any confidence could put in the least confident tenth: the share of the
    total MSE held by the tenth with the *largest* errors. Where it is under
    `DECILE_TARGET` (a few images hold the set's error, and the tenth is one or two images)
    the target cannot be met by any ranking, only approached."""
    mse = np.sort([r.mse for r in results if r.method == "classical"
                   and r.confidence is not None])[::-1]
    if len(mse) < 3:
        return float("nan")
    k = max(1, round(len(mse) / 10))
    return float(mse[:k].sum() / max(mse.sum(), 1e-12))


def _confidence_rows(sets: Sequence[tuple[str, Sequence[ItemResult]]]) -> list[str]:
    lines = ["| set | n | Spearman(1 − conf, MSE) | error share of least confident 10 % | "
             "best possible share | met |",
             "|---|---:|---:|---:|---:|---|"]
    for name, res in sets:
        rho, share, n = confidence_figures(res)
        best = best_decile_share(res)
        lines.append(f"| {name} | {n} | {rho:.2f} | {share:.0%} | {best:.0%} | "
                     f"{_verdict(rho, share, best)} |")
    return lines


def _verdict(rho: float, share: float, best: float) -> str:
    """'yes', or 'NO' — and where the tenth's ceiling is itself under `DECILE_TARGET`, says
    so (issue 16's fifth pass): no ranking can meet the share target on that set, so the miss
    is the set's, not the confidence's."""
    if rho >= SPEARMAN_TARGET and share >= DECILE_TARGET:
        return "yes"
    if best < DECILE_TARGET:
        return f"NO (tenth out of reach: best possible under {DECILE_TARGET:.0%})"
    return "NO"


def _mean(xs: Iterable[float]) -> float:
    v = list(xs)
    return float(np.mean(v)) if v else float("nan")


def _table(results: list[ItemResult], key: Callable[[ItemResult], str], title: str) -> list[str]:
    groups = sorted({key(r) for r in results})
    lines = [f"| {title} | n | classical MSE | naive MSE | ratio | classical SAD | naive SAD | "
             "mean confidence |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for g in [*groups, "all"]:
        sel = [r for r in results if g == "all" or key(r) == g]
        c = [r for r in sel if r.method == "classical"]
        n = [r for r in sel if r.method == "naive"]
        cm, nm = _mean(r.mse for r in c), _mean(r.mse for r in n)
        conf = _mean(r.confidence for r in c if r.confidence is not None)
        name = f"**{g}**" if g == "all" else g
        lines.append(f"| {name} | {len(c)} | {cm:.5f} | {nm:.5f} | {cm / max(nm, 1e-12):.2f} | "
                     f"{_mean(r.sad for r in c):.2f} | {_mean(r.sad for r in n):.2f} | "
                     f"{conf:.2f} |")
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
        *_confidence_rows([(title, results)]),
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


def third_report(results: list[ItemResult], source: str) -> str:
    """The third set: one row per kind, the studio target over its studio kinds, confidence
    figures over the whole set and over the photo-like kinds alone."""
    c = [r for r in results if r.method == "classical"]
    studio = _mean(r.mse for r in c if r.kind in third_set.STUDIO_KINDS)
    plain_grad = _mean(r.mse for r in c if r.kind in ("plain", "gradient"))
    photo = [r for r in results if r.kind in ("cluttered", "photo_backdrop")]
    lines = [
        "### Third set (generated independently: `bench.third_set`)",
        "",
        f"{len(c)} composites with exact ground truth: {source}.",
        "",
        *_table(results, lambda r: r.kind, "kind"),
        "",
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        f"| mean MSE, plain + gradient kinds | {plain_grad:.5f} | ≤ {STUDIO_TARGET_MSE} | "
        f"{'yes' if plain_grad <= STUDIO_TARGET_MSE else 'NO'} |",
        f"| mean MSE, every studio kind ({', '.join(third_set.STUDIO_KINDS)}) | {studio:.5f} | "
        f"≤ {STUDIO_TARGET_MSE} | {'yes' if studio <= STUDIO_TARGET_MSE else 'NO'} |",
        "",
        *_confidence_rows([("third set, all kinds", results),
                           ("third set, photo-like (cluttered + photo_backdrop)", photo)]),
        "",
        "<details><summary>per image</summary>",
        "",
        "| image | kind | route | classical MSE | confidence | classical s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in c:
        conf = f"{r.confidence:.2f}" if r.confidence is not None else "–"
        lines.append(f"| {r.name} | {r.kind} | {r.route} | {r.mse:.5f} | {conf} | "
                     f"{r.seconds:.2f} |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Speed:
    """One clock's figures of `speed_ratio`: seconds per image of each kind."""

    clock: str
    cluttered: float
    """Mean over the bundled photos (cluttered path) of each photo's median."""
    studio: float
    """The same over the third-set studio shots."""

    @property
    def ratio(self) -> float:
        return self.cluttered / max(self.studio, 1e-9)


def speed_ratio(engine: ClassicalEngine, photos: Sequence[npt.NDArray[np.uint8]],
                rounds: int = SPEED_ROUNDS) -> tuple[Speed, Speed]:
    """(wall clock, CPU) figures of the engine on the bundled photos (cluttered: no smooth
    border) and on third-set studio shots, all at `SPEED_SIZE`. Every round runs each image
    once, the kinds alternating image by image (so both see the same machine load); each
    image's figure is its median over the rounds and a kind's is the mean of its images'.
    Both clocks are read around the same call; the CPU clock (`time.process_time`) counts
    this process's seconds only, which other work on a shared machine does not inflate.

    The median of all the calls of a kind together (the figure before issue 16's seventh
    speed pass) is mostly the middle image's, and its ratio moved by ±0.25 from run to run
    of the same code on a quiet machine."""
    import cv2

    def sized(im: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return np.asarray(cv2.resize(im, SPEED_SIZE, interpolation=cv2.INTER_AREA), np.uint8)

    kinds = {"cluttered": [sized(im) for im in photos],
             "studio": [sized(third_set.item(THIRD_SEED, i).image) for i in (0, 1, 8)]}
    most = max(len(ims) for ims in kinds.values())
    order = [(kind, i) for i in range(most) for kind in kinds if i < len(kinds[kind])]
    wall: dict[tuple[str, int], list[float]] = {key: [] for key in order}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in order}
    for _ in range(rounds):
        for kind, i in order:
            t0, c0 = time.perf_counter(), time.process_time()
            engine.predict([kinds[kind][i]])
            wall[kind, i].append(time.perf_counter() - t0)
            cpu[kind, i].append(time.process_time() - c0)

    def figures(clock: str, times: dict[tuple[str, int], list[float]]) -> Speed:
        per = {kind: float(np.mean([np.median(times[key]) for key in order if key[0] == kind]))
               for kind in kinds}
        return Speed(clock, per["cluttered"], per["studio"])

    return figures("wall clock", wall), figures("CPU", cpu)


HEADER = """## Matting quality (`classical` vs naive baseline)

Alpha in [0, 1]; MSE = mean (α−g)² over the whole image, SAD = Σ|α−g| / 1000. Naive baseline:
Lab distance to the border's median colour, Otsu threshold (the same function the engine keeps
as its floor on cluttered images). Targets: mean MSE ≤ 0.003 on plain and gradient backdrops,
overall mean MSE ≤ 0.3 of the baseline's, on the team's set and on a held-out set.
"""


def seeds_from_env(name: str, default: Sequence[int]) -> tuple[int, ...]:
    """The seeds in environment variable `name` (comma-separated; empty: none), else
    `default`."""
    raw = os.environ.get(name)
    if raw is None:
        return tuple(default)
    return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)


def photo_seeds_from_env() -> tuple[int, ...]:
    """BENCH_PHOTO_SEEDS (comma-separated; empty: none), else `PHOTO_SEEDS`."""
    return seeds_from_env("BENCH_PHOTO_SEEDS", PHOTO_SEEDS)


def third_results(seeds: Sequence[int], methods: dict[str, Method], count: int,
                  kinds: Sequence[str] | None = None) -> list[ItemResult]:
    """Third-set images 0 … count − 1 of each seed (only `kinds`, if given), through
    `evaluate`; names carry the seed (image i of every seed has the same name)."""
    out: list[ItemResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            got = evaluate(third_set.generate(Path(tmp) / str(seed), seed, count, kinds),
                           methods)
            for r in got:
                r.name = f"s{seed}/{r.name}"
            out += got
    return out


def photo_set(seeds: Sequence[int], methods: dict[str, Method],
              count: int = PHOTO_COUNT) -> list[ItemResult]:
    """The photo-like kinds (`third_set.PHOTO_KINDS`) of third-set images 0 … count − 1 of
    each seed (`third_results`)."""
    return third_results(seeds, methods, count, third_set.PHOTO_KINDS)


def photo_report(results: list[ItemResult], seeds: Sequence[int]) -> str:
    """The confidence figures on the photo-like set, per seed and over all of it: a tenth of
    several images, so the share target can be met where one seed's tenth (one image) could
    not (`best_decile_share`)."""
    c = [r for r in results if r.method == "classical"]
    lines = [
        "### Photo-like set: confidence (issue 16)",
        "",
        f"{len(c)} images of the photo-like kinds ({', '.join(third_set.PHOTO_KINDS)}) of "
        f"`bench.third_set`, seeds {', '.join(str(s) for s in seeds)} (images 0–"
        f"{PHOTO_COUNT - 1} of each; `BENCH_PHOTO_SEEDS` changes the seeds, empty skips it). "
        f"Mean MSE {_mean(r.mse for r in c):.5f}, mean confidence "
        f"{_mean(r.confidence for r in c if r.confidence is not None):.2f}.",
        "",
        *_confidence_rows([("photo-like, all seeds", c),
                           *((f"photo-like, seed {s}",
                              [r for r in c if r.name.startswith(f"s{s}/")]) for s in seeds)]),
        "",
    ]
    return "\n".join(lines)


def run(quality_dir: Path | None = None, seeds: Sequence[int] = HELDOUT_SEEDS,
        third_count: int = THIRD_COUNT, third_seeds: Sequence[int] = THIRD_SEEDS,
        photo_seeds: Sequence[int] = PHOTO_SEEDS) -> str:
    """The markdown section for BENCHMARKS.md: the team's quality set, then a held-out set
    generated the same way with other shapes and textures (`bench.heldout`)."""
    qdir = quality_dir or default_quality_dir()
    engine = ClassicalEngine()
    engine.load()
    classical = ClassicalMethod(engine)

    def naive(image: npt.NDArray[np.uint8]) -> Matte:
        return Matte(alpha=naive_alpha(image))

    # Warm-up outside the timing: numba kernels compile on first use (both paths).
    photos = [decode_rgb(p) for p in sorted(third_set.SAMPLES.glob("*.jpg"))
              if p.stem in ("astronaut", "coffee", "chelsea")]
    classical(np.full((64, 64, 3), 200, np.uint8))
    classical(np.ascontiguousarray(photos[0][::4, ::4]))
    methods: dict[str, Method] = {"classical": classical, "naive": naive}
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
    if third_count > 0:
        third = third_results(third_seeds, methods, third_count)
        seeds3 = ", ".join(str(s) for s in third_seeds)
        parts.append(third_report(third, f"`python -m bench.third_set DIR SEED`, seeds {seeds3}, "
                                         f"{third_count} images each, 8 kinds"))
    if photo_seeds:
        parts.append(photo_report(photo_set(photo_seeds, {"classical": classical}),
                                  photo_seeds))
    speeds = speed_ratio(engine, photos)
    wall, cpu = speeds
    parts += [
        "### Speed: cluttered photo against studio shot of the same size",
        "",
        f"At {SPEED_SIZE[0]}×{SPEED_SIZE[1]}, each image's median of {SPEED_ROUNDS} rounds "
        "(the kinds alternating image by image), averaged over the bundled photos (cluttered "
        f"path) and over three third-set studio shots: {wall.cluttered:.2f} s against "
        f"{wall.studio:.2f} s wall clock; {cpu.cluttered:.2f} s and {cpu.studio:.2f} s of "
        "this process's CPU time (other load on the machine does not count there).",
        "",
        "| target | value | goal | met |",
        "|---|---:|---:|---|",
        *(f"| cluttered / studio time ({sp.clock}) | {sp.ratio:.2f} | ≤ {SPEED_TARGET} | "
          f"{'yes' if sp.ratio <= SPEED_TARGET else 'NO'} |" for sp in speeds),
        "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--quick"]
    quick = "--quick" in sys.argv[1:]
    sys.stdout.write(run(Path(args[0]) if args else None,
                         seeds=HELDOUT_SEEDS[:1] if quick else HELDOUT_SEEDS,
                         third_count=16 if quick else THIRD_COUNT,
                         third_seeds=THIRD_SEEDS[:1] if quick else THIRD_SEEDS,
                         photo_seeds=() if quick else photo_seeds_from_env()))
