"""The guided filter's per-pixel 3×3 systems solved by their adjugate (`guided._solve_sym3`)
against LAPACK's solve of the same systems."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from matting_worker.engines import guided

F64 = npt.NDArray[np.float64]


def _reference(guide: npt.NDArray[np.float32], src: npt.NDArray[np.float32], r: int,
               eps: float) -> tuple[F64, F64]:
    """The coefficients as they were computed before: `np.linalg.solve` per pixel, float64."""
    g, p = guide.astype(np.float64), src.astype(np.float64)

    def box(x: F64) -> F64:
        return guided._box(x.astype(np.float32), r).astype(np.float64)

    mean_i = np.stack([box(g[..., c]) for c in range(3)], axis=-1)
    mean_p = box(p)
    cov_ip = np.stack([box(g[..., c] * p) for c in range(3)], axis=-1) - mean_i * mean_p[..., None]
    var = np.empty((*g.shape[:2], 3, 3))
    for i in range(3):
        for j in range(3):
            var[..., i, j] = box(g[..., i] * g[..., j]) - mean_i[..., i] * mean_i[..., j]
    var += np.eye(3) * eps
    a = np.linalg.solve(var, cov_ip[..., None])[..., 0]
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    return (np.stack([box(a[..., c]) for c in range(3)], axis=-1), box(b))


def test_adjugate_solves_random_symmetric_positive_definite_systems() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 40, 3, 3))
    spd = m @ np.swapaxes(m, -1, -2) + np.eye(3) * 1e-3
    rhs = rng.normal(size=(50, 40, 3))
    entries = {(i, j): spd[..., i, j] for i in range(3) for j in range(i, 3)}
    got = guided._solve_sym3(entries, rhs)
    want = np.linalg.solve(spd, rhs[..., None])[..., 0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["colour", "grey", "flat"])
def test_coefficients_match_the_per_pixel_solve(kind: str) -> None:
    """Colour noise, a grey guide (its covariance is rank one plus eps: the nearest to
    singular a guide gets) and a flat one (eps alone)."""
    rng = np.random.default_rng(1)
    guide = rng.random((60, 80, 3)).astype(np.float32)
    if kind == "grey":
        guide[..., 1] = guide[..., 0]
        guide[..., 2] = guide[..., 0]
    if kind == "flat":
        guide[:] = 0.5
    src = rng.random((60, 80)).astype(np.float32)
    for r in (1, 2):
        a, b = guided.guided_coefficients(guide, src, r, 1e-4)
        ra, rb = _reference(guide, src, r, 1e-4)
        np.testing.assert_allclose(a, ra, atol=2e-4 * max(1.0, float(np.abs(ra).max())))
        np.testing.assert_allclose(b, rb, atol=2e-4)
