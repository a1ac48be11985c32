"""The fallback when the border is not a smooth backdrop: iterative colour models (GrabCut).

A textured or cluttered border still says what the background's colours are, just not as one
surface. GrabCut learns Gaussian mixtures for background (seeded from the border) and object
(seeded from what differs most from the border) and alternates them with a graph cut, on a
small copy for speed: the rounds at `COARSE_SIDE`, then one cut of a thin band around that
outline at `CUT_SIDE` with the learnt models. Its answer is kept only if it is a plausible
object; otherwise the plain border-distance threshold is used, so the fallback is never worse
than that.

When the object itself touches the border (a portrait cut off at the bottom, a face filling
the frame), the border clusters contain the object's colours and the border-seeded cut can
collapse to a speck. Such a degenerate answer is never returned while a non-degenerate one
exists: GrabCut seeded from a centre and saliency prior, and the plain threshold, compete by
how well their outlines follow image edges and hold together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from matting_worker.engines import graphcut
from matting_worker.engines.studio import disk

__all__ = ["ClutteredCut", "border_distance_mask", "cluttered_coarse", "cluttered_cut",
           "is_degenerate", "spectral_saliency"]

F32 = npt.NDArray[np.float32]
CUT_SIDE = 400
"""Longest side of the border-distance map and of the border-seeded cut's answer."""
CUT_ROUNDS = 4
"""GrabCut rounds of the border-seeded cut. Two or three broke a busy-backdrop image or
worsened textured backdrops; stopping once the mask stops changing saved nothing measurable
(OpenCV redoes its edge weights on every call). Three with the settled rounds (issue 16's
sixth speed pass, 137 cluttered-path images of every set): ~0.03 s less, but the textured
sets' error up 4–5 % (the team's 0.00363 → 0.00381)."""
COARSE_SIDE = 280
"""Longest side at which the border-seeded cut runs its rounds and learns its colour models.
A graph cut's cost grows faster than its pixel count: 280 instead of 400 takes the cut from
0.8 to 0.33 CPU s on a 640×480 photo. 240 and 200 were faster still but lost
parts of soft-edged objects on textured backdrops (team set textured 0.0037 → 0.0052).
Only the first round smaller (140 or 200 px, its outline carried up to settle the rounds at
280) lost the same images (0.0037 → 0.0074 / 0.0050), and the k-means start of the colour
models taken at 140 px moved every set's error by up to ±20 % (GrabCut's answer depends on
its start): issue 16's sixth speed pass kept both out."""
REFINE_BAND = 4
"""Half-width (pixels at `CUT_SIDE`) of the band around the coarse outline that is cut once
more at `CUT_SIDE` with the coarse colour models (0: no coarse stage, every round at
`CUT_SIDE`, the behaviour before issue 16's speed work)."""
RIVAL_MARGIN = 1.3
"""How much better (edge-following × wholeness) the centre-seeded cut must score to replace
the border-seeded one. 1.5 until the border-seeded cut went two-stage (`COARSE_SIDE`): its
coarse rounds leave fewer specks, so a cut that swallowed backdrop scores a little higher
than before (held-out seed 4, image 6: 3.6 → 4.1 against the centre cut's 5.5). 1.3 and 1.25
change no winner on the team, held-out and third sets."""
PRIOR_SIDE = 160
"""Longest side of the centre-seeded rival cut. It starts from a wide guess and needs more
rounds than the border-seeded cut, and it only competes as a coarse alternative, so it runs
on a sixth of the pixels (it was most of the cluttered path's time; 200 → 160 in issue 16's
speed work halved its share again without changing a winner on the three sets; 136 in the
sixth pass changed one: a photo-like image 0.105 → 0.356)."""
PRIOR_ROUNDS = 3
"""GrabCut rounds of the centre-seeded cut (2 turned one lamp's winner: 0.029 → 0.18)."""
SETTLED_SHARE = 0.07
"""After a cut's first round, pixels farther than this share of the frame's long side from
its outline are fixed to the side they are on for the later rounds (20 px at `COARSE_SIDE`).
A later round still learns its colour models from every pixel, so the models are the same;
what changes is that OpenCV's max-flow has only the outline's neighbourhood left to decide,
which takes most of a round's cost (issue 16, point 4: the border-seeded cut's rounds
0.14–0.38 → 0.12–0.26 CPU s on the three bundled photos, their outlines the same to ≤ 6
pixels; at 12 px a round-1 region of one photo flipped back later, so nearer is not safe)."""
BAND_OWN_CUT = True
"""Make the band cut at `CUT_SIDE` with `graphcut.cut` (a max-flow of the band's pixels
alone) instead of OpenCV's `grabCut`, whose graph spans the whole frame: the same labels
(`engines/graphcut.py` says why), 0.04 → 0.02 CPU s a photo (issue 16, point 4, fifth pass).
False gives OpenCV's cut, which the tests compare against."""
_cv: Any = cv2  # OpenCV's stubs reject the documented None arguments of kmeans / grabCut


def border_distance_mask(image: npt.NDArray[np.uint8]) -> F32:
    """Lab distance to the border's median colour, Otsu threshold (the plain baseline)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    diff = lab - np.median(border, axis=0)
    dist = np.sqrt(np.einsum("hwc,hwc->hw", diff, diff))  # the norm, without its temporaries
    d8 = np.clip(dist * (255.0 / max(float(dist.max()), 1e-6)), 0, 255).astype(np.uint8)
    _, mask = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    out: F32 = (mask > 0).astype(np.float32)
    return out


def _border_gmm_distance(small: npt.NDArray[np.uint8]) -> tuple[F32, float]:
    """How unlike the border's colour clusters each pixel is (Lab, k-means centres), and the
    99.5th percentile of that distance on the border itself (the backdrop's own spread)."""
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    h, w = lab.shape[:2]
    s = max(2, round(0.04 * min(h, w)))
    strip = np.zeros((h, w), bool)
    strip[:s], strip[-s:], strip[:, :s], strip[:, -s:] = True, True, True, True
    samples = lab[strip]
    k = min(8, max(1, len(samples) // 50))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = _cv.kmeans(samples, k, None, crit, 2, cv2.KMEANS_PP_CENTERS)
    # Nearest centre by squared distance, one centre at a time (no H×W×k×3 temporary), one
    # square root at the end: the same float32 figures as the norm over all centres, in half
    # the time.
    d2: F32 | None = None
    for c in np.asarray(centres, np.float32):
        diff = lab - c
        dc = np.einsum("hwc,hwc->hw", diff, diff)
        d2 = dc if d2 is None else np.minimum(d2, dc, out=d2)
    assert d2 is not None  # k >= 1
    d = np.sqrt(d2).astype(np.float32)
    return d, float(np.percentile(d[strip], 99.5))


def _distance_mask(dist: F32, border_q: float) -> npt.NDArray[np.bool_] | None:
    """Pixels unlike every border cluster: above both Otsu's split and the border's own spread."""
    hi = float(np.percentile(dist, 99.5))
    if hi <= 1e-3:
        return None
    d8 = np.clip(dist / hi * 255, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = max(float(otsu) / 255 * hi, border_q)
    mask = (dist > thr).astype(np.uint8)
    mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)), np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= max(20, 0.05 * areas.max())
    out: npt.NDArray[np.bool_] = keep[labels]
    return out


def _border_seeds(dist: F32) -> npt.NDArray[np.uint8] | None:
    """GrabCut's starting labels from the border-distance map: clearly unlike the border is
    object, unlike it at all probably object, a thin frame sure backdrop; None when nothing
    stands out."""
    sh, sw = dist.shape
    hi = float(np.percentile(dist, 99))
    if hi <= 1e-3:
        return None
    d8 = np.clip(dist / hi * 255, 0, 255).astype(np.uint8)
    thr, seed = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    mask[seed > 0] = cv2.GC_PR_FGD
    mask[d8 > min(254, thr + (255 - thr) * 0.5)] = cv2.GC_FGD
    _frame(mask)
    if not (mask == cv2.GC_FGD).any() and not (mask == cv2.GC_PR_FGD).any():
        return None
    return mask


def _frame(mask: npt.NDArray[np.uint8]) -> None:
    """The outer 2 % of the frame is sure backdrop (in place)."""
    sh, sw = mask.shape
    b = max(1, round(0.02 * min(sw, sh)))
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = (cv2.GC_BGD,) * 4


def _grabcut(small: npt.NDArray[np.uint8], dist: F32) -> npt.NDArray[np.bool_] | None:
    """GrabCut seeded from the border-distance map (object: clearly unlike the border).

    The rounds that learn the colour models run at `COARSE_SIDE`; the outline is then cut
    once more at `small`'s size with those models, only in a band of `REFINE_BAND` pixels
    around the coarse outline (a graph cut's cost grows faster than its pixel count)."""
    sh, sw = dist.shape
    scale = COARSE_SIDE / max(sh, sw)
    if scale >= 1.0 or REFINE_BAND <= 0:
        seeds = _border_seeds(dist)
        return None if seeds is None else _cut_from_mask(small, seeds, CUT_ROUNDS)
    size = (max(8, round(sw * scale)), max(8, round(sh * scale)))
    seeds = _border_seeds(_shrink(dist, size))
    if seeds is None:
        return None
    models = _models()
    coarse = _cut_from_mask(_shrink(small, size), seeds, CUT_ROUNDS, models)
    if coarse is None:
        return None
    up = np.asarray(cv2.resize(coarse.astype(np.float32), (sw, sh),
                               interpolation=cv2.INTER_LINEAR) >= 0.5, np.uint8)
    k = disk(REFINE_BAND)
    mask = np.where(up > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[np.asarray(cv2.erode(up, k)) > 0] = cv2.GC_FGD
    mask[np.asarray(cv2.erode(1 - up, k)) > 0] = cv2.GC_BGD
    _frame(mask)
    try:
        if BAND_OWN_CUT:
            graphcut.cut(small, mask, *models, graphcut.contrast(small))
        else:
            _cv.grabCut(small, mask, None, *models, 1, cv2.GC_EVAL_FREEZE_MODEL)
    except (cv2.error, graphcut.GrabCutError):
        fine: npt.NDArray[np.bool_] = up > 0
        return fine
    out: npt.NDArray[np.bool_] = (mask & 1) > 0
    return out


def _shrink(x: npt.NDArray[Any], size: tuple[int, int]) -> npt.NDArray[Any]:
    return np.asarray(cv2.resize(x, size, interpolation=cv2.INTER_AREA), x.dtype)


def _models() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Empty background and object colour models in OpenCV's GrabCut layout."""
    return np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)


def _cut_from_mask(
    small: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8], iterations: int,
    models: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
) -> npt.NDArray[np.bool_] | None:
    """GrabCut from a seeded `mask` (updated in place): the sure and probable foreground, or
    None where OpenCV gives up (a colour model it cannot fit). `models`, when given, receive
    the learnt colour models (to cut again at another size without refitting them)."""
    bgd, fgd = models if models is not None else _models()
    try:
        _cv.grabCut(small, mask, None, bgd, fgd, 1, cv2.GC_INIT_WITH_MASK)
        if iterations > 1:
            _settle(mask, SETTLED_SHARE * max(mask.shape))
            _cv.grabCut(small, mask, None, bgd, fgd, iterations - 1, cv2.GC_EVAL)
    except cv2.error:
        return None
    fg: npt.NDArray[np.bool_] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return fg


def _settle(mask: npt.NDArray[np.uint8], distance: float) -> None:
    """Fix every pixel farther than `distance` from the cut's outline to its side (in place):
    sure object or sure backdrop, so later rounds only decide the outline's neighbourhood."""
    fg = (mask & 1).astype(np.uint8)
    inside = np.asarray(cv2.distanceTransform(fg, cv2.DIST_L2, 3), np.float32)
    outside = np.asarray(cv2.distanceTransform(1 - fg, cv2.DIST_L2, 3), np.float32)
    mask[inside > distance] = cv2.GC_FGD
    mask[outside > distance] = cv2.GC_BGD


def _separation(mask: npt.NDArray[np.bool_], dist: F32) -> float:
    """Fisher-style contrast of the border distance inside vs outside a mask (higher: cleaner)."""
    if mask.sum() < 10 or (~mask).sum() < 10:
        return -1.0
    a, b = dist[mask], dist[~mask]
    return float((a.mean() - b.mean()) / (a.std() + b.std() + 1e-6))


def spectral_saliency(small: npt.NDArray[np.uint8]) -> F32:
    """Spectral-residual saliency (Hou & Zhang 2007) in [0, 1]: what the log spectrum's smooth
    trend does not explain stands out. Pure numpy, so headless OpenCV builds need no contrib."""
    g = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = np.asarray(cv2.resize(g, (64, 64), interpolation=cv2.INTER_AREA), np.float32)
    f = np.fft.fft2(g)
    amp = np.log(np.abs(f) + 1e-6).astype(np.float32)
    residual = amp - np.asarray(cv2.blur(amp, (3, 3)), np.float32)
    sal = (np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(f)))) ** 2).astype(np.float32)
    sal = np.asarray(cv2.GaussianBlur(sal, (0, 0), 2.5), np.float32)
    sal = np.asarray(cv2.resize(sal, (small.shape[1], small.shape[0])), np.float32)
    out: F32 = sal / max(float(sal.max()), 1e-9)
    return out


def _prior_grabcut(small: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_] | None:
    """GrabCut that does not trust the whole border: the subject is assumed near the centre
    (and may run off the bottom and sides), salient spots there join it; only the top strip
    and the upper side strips are taken as sure background. Runs at `PRIOR_SIDE` and is
    carried back to `small`'s size."""
    full_h, full_w = small.shape[:2]
    scale = min(1.0, PRIOR_SIDE / max(full_h, full_w))
    if scale < 1.0:
        size = (max(8, round(full_w * scale)), max(8, round(full_h * scale)))
        small = np.asarray(cv2.resize(small, size, interpolation=cv2.INTER_AREA), np.uint8)
    sh, sw = small.shape[:2]
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    centre = np.exp(-(((xx / sw - 0.5) / 0.3) ** 2 + ((yy / sh - 0.55) / 0.35) ** 2) / 2)
    sal = spectral_saliency(small)
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    mask[(centre > 0.6) | ((sal > 0.5) & (centre > 0.3))] = cv2.GC_PR_FGD
    b = max(1, round(0.03 * min(sh, sw)))
    mask[:b] = cv2.GC_BGD
    mask[: sh // 2, :b] = cv2.GC_BGD
    mask[: sh // 2, -b:] = cv2.GC_BGD
    cut = _cut_from_mask(small, mask, PRIOR_ROUNDS)
    if cut is None or scale >= 1.0:
        return cut
    up = cv2.resize(cut.astype(np.float32), (full_w, full_h), interpolation=cv2.INTER_LINEAR)
    out: npt.NDArray[np.bool_] = up >= 0.5
    return out


def is_degenerate(mask: npt.NDArray[np.bool_]) -> bool:
    """Almost nothing, almost everything, or only specks: not a plausible subject."""
    cover = float(mask.mean())
    if cover < 0.02 or cover > 0.97:
        return True
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if n > 1 else 0
    return largest < 0.01 * mask.size


def _gradient(small: npt.NDArray[np.uint8]) -> F32:
    """The grey image's Sobel gradient magnitude, which `_cut_score` measures outlines on
    (computed once per image: every cut tried is scored against the same one)."""
    g = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag: F32 = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    return mag


def _cut_score(mag: F32, mask: npt.NDArray[np.bool_]) -> float:
    """Label-free quality of a cut: how much stronger the image gradient (`_gradient`) is on
    its outline than on average (a real object boundary follows edges), times the share of
    the mask in its largest piece (a subject is one piece; a colour threshold scatters into
    many)."""
    m8 = mask.astype(np.uint8)
    if m8.sum() < 10 or (1 - m8).sum() < 10:
        return 0.0
    k = np.ones((3, 3), np.uint8)
    outline = (np.asarray(cv2.dilate(m8, k)) - np.asarray(cv2.erode(m8, k))) > 0
    align = float(mag[outline].mean()) / max(float(mag.mean()), 1e-6)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    share = float(stats[1:, cv2.CC_STAT_AREA].max()) / float(m8.sum()) if n > 1 else 0.0
    return align * share


def _rival(mag: F32, best: npt.NDArray[np.bool_], dist: F32,
           prior: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.bool_]:
    """A busy backdrop can make the border-seeded cut swallow half the background. The cut
    seeded from the centre and saliency (`prior`) takes over only when it wins on both
    counts: its colours separate more cleanly and its outline follows image edges clearly
    better."""
    if prior is None or is_degenerate(prior):
        return best
    if (_separation(prior, dist) > _separation(best, dist)
            and _cut_score(mag, prior) > RIVAL_MARGIN * _cut_score(mag, best)):
        return prior
    return best


def _guard(
    mag: F32,
    chosen: npt.NDArray[np.bool_],
    naive_small: npt.NDArray[np.bool_],
    prior: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.bool_]:
    """Keep the border-seeded choice unless it is degenerate; then the best-scoring
    non-degenerate alternative (prior-seeded GrabCut or the plain threshold) wins."""
    if not is_degenerate(chosen):
        return chosen
    others = [m for m in (prior, naive_small) if m is not None]
    others = [m for m in others if not is_degenerate(m)]
    if not others:
        return chosen
    return max(others, key=lambda m: _cut_score(mag, m))


@dataclass
class ClutteredCut:
    """The cluttered path's answer and what it knows about its own reliability."""

    mask: F32
    """H×W in {0, 1}, the image's size."""
    how: str
    """Which cut won: 'grabcut', 'distance', 'prior' (centre-seeded) or 'naive' (the floor)."""
    agreement: float
    """Mean IoU of the winner with the other plausible cuts it tried (1: they all agree)."""
    separation: float
    """Fisher contrast of the border distance inside vs outside the winner."""
    edge_score: float
    """How much stronger the image gradient is on the winner's outline than on average."""
    rival_margin: float = 0.0
    """Where the centre-seeded cut beat a plausible border-seeded one (`_rival`; `how`
    'prior'): its cut score over the beaten cut's, at least `RIVAL_MARGIN`. 0 where no such
    contest was won (the border-seeded cut kept, or degenerate and replaced by `_guard`)."""


def _iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    union = float(np.count_nonzero(a | b))
    return float(np.count_nonzero(a & b)) / union if union else 1.0


def cluttered_coarse(image: npt.NDArray[np.uint8]) -> F32:
    """A coarse object mask (H×W in {0, 1}) without assuming a smooth backdrop."""
    return cluttered_cut(image).mask


def cluttered_cut(image: npt.NDArray[np.uint8]) -> ClutteredCut:
    """A coarse object mask without assuming a smooth backdrop, with its reliability signals.

    GrabCut seeded from the distance to the border's colour clusters; if it fails, the cut of
    that distance at the border's own spread. Whatever is chosen must separate the image at
    least as cleanly as the plain threshold does, else the plain threshold is returned. The
    centre-seeded cut runs once and serves both as the rival and as the guard's alternative.
    """
    # k-means and GrabCut draw from OpenCV's (per-thread) generator: seed it so the same image
    # always gives the same matte, whatever ran before it in this worker (retries agree).
    cv2.setRNGSeed(0)
    h, w = image.shape[:2]
    scale = min(1.0, CUT_SIDE / max(h, w))
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    small = np.asarray(cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), np.uint8)
    raw, border_q = _border_gmm_distance(small)
    dist = np.asarray(cv2.GaussianBlur(raw, (0, 0), 1.5), np.float32)
    naive = border_distance_mask(image)
    naive_small = cv2.resize(naive, (sw, sh), interpolation=cv2.INTER_AREA) >= 0.5
    floor = _separation(naive_small, dist)
    # GrabCut first (its colour models keep low-contrast parts of a multi-coloured object);
    # the plain distance cut only when GrabCut clearly lost the separation the colours give.
    found: list[tuple[npt.NDArray[np.bool_], float, str]] = []
    tried: list[npt.NDArray[np.bool_]] = []
    for fg, how in ((_grabcut(small, dist), "grabcut"),
                    (_distance_mask(dist, border_q), "distance")):
        if fg is not None and 0.002 <= float(fg.mean()) <= 0.9:
            tried.append(fg)
            score = _separation(fg, dist)
            if score >= floor:
                found.append((fg, score, how))
    if found:
        best, score, how = found[0]
        if len(found) == 2 and found[1][1] > 3.0 * score:
            best, how = found[1][0], found[1][2]
    else:
        best, how = naive_small, "naive"
    prior = _prior_grabcut(small)
    if prior is not None:
        tried.append(prior)
    mag = _gradient(small)
    chosen = _rival(mag, best, dist, prior)
    chosen = _guard(mag, chosen, naive_small, prior)
    if chosen is not best:
        how = "naive" if chosen is naive_small else "prior"
    others = [m for m in (*tried, naive_small) if m is not chosen and not is_degenerate(m)]
    agreement = float(np.mean([_iou(chosen, m) for m in others])) if others else 0.0
    sep, edge = _separation(chosen, dist), _cut_score(mag, chosen)
    if chosen is naive_small:
        return ClutteredCut(naive, how, agreement, sep, edge)
    # The contest's margin (`_rival` scored both; the confidence reads it, issue 16 point 2).
    margin = (edge / max(_cut_score(mag, best), 1e-6)
              if how == "prior" and not is_degenerate(best) else 0.0)
    full = cv2.resize(chosen.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return ClutteredCut(np.asarray(full >= 0.5, np.float32), how, agreement, sep, edge, margin)
