"""The weight-free engine runs its small linear algebra on one BLAS thread and gives the
process's setting back (`matting_worker.engines.blas`)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import ThreadpoolController

from matting_worker.engines.blas import one_blas_thread
from matting_worker.engines.classical import ClassicalEngine


def _blas_threads() -> set[int]:
    return {int(i["num_threads"]) for i in ThreadpoolController().info()
            if i["user_api"] == "blas"}


def test_one_thread_inside_and_the_setting_back_after() -> None:
    ctl = ThreadpoolController()
    with ctl.limit(limits=2, user_api="blas"):
        assert _blas_threads() == {2}
        with one_blas_thread():
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_engine_leaves_the_process_setting_as_it_was() -> None:
    """A worker's WORKER_THREADS still holds for the other engines after a classical batch,
    and the engine's matte is made (both paths run inside the limit)."""
    rng = np.random.default_rng(0)
    busy = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    plain = np.full((96, 128, 3), 200, np.uint8)
    plain[30:70, 40:90] = (30, 60, 150)
    engine = ClassicalEngine()
    with ThreadpoolController().limit(limits=2, user_api="blas"):
        mattes = engine.predict([busy, plain])
        assert _blas_threads() == {2}
    assert len(mattes) == 2
    assert engine.last_paths[1] == "studio"
