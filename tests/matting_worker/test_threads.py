"""The weight-free engine runs its small linear algebra and image calls on one BLAS thread and
one OpenCV thread, and gives the process's settings back (`matting_worker.engines.threads`)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from matting_worker.engines.base import Matte
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.threads import one_blas_thread, one_opencv_thread, one_thread


def _blas_threads() -> set[int]:
    return {int(i["num_threads"]) for i in ThreadpoolController().info()
            if i["user_api"] == "blas"}


def test_one_blas_thread_inside_and_the_setting_back_after() -> None:
    ctl = ThreadpoolController()
    with ctl.limit(limits=2, user_api="blas"):
        assert _blas_threads() == {2}
        with one_blas_thread():
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}


def test_one_opencv_thread_inside_and_the_setting_back_after_even_on_error() -> None:
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        with one_opencv_thread():
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 2
        try:
            with one_thread():
                assert cv2.getNumThreads() == 1 and _blas_threads() == {1}
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


class Watching(ClassicalEngine):
    """The real engine, noting the thread settings its paths run under."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, set[int]]] = []

    def _alpha(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], float]:
        self.seen.append((cv2.getNumThreads(), _blas_threads()))
        return super()._alpha(image)


def test_engine_works_on_one_thread_and_leaves_the_process_setting_as_it_was() -> None:
    """A worker's WORKER_THREADS still holds for the other engines after a classical batch,
    both paths ran inside the limits, and the mattes are made."""
    rng = np.random.default_rng(0)
    busy = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    plain = np.full((96, 128, 3), 200, np.uint8)
    plain[30:70, 40:90] = (30, 60, 150)
    engine = Watching()
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        with ThreadpoolController().limit(limits=2, user_api="blas"):
            mattes: list[Matte] = engine.predict([busy, plain])
            assert _blas_threads() == {2}
            assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)
    assert len(mattes) == 2
    assert engine.last_paths == ["cluttered", "studio"]
    assert engine.seen == [(1, {1}), (1, {1})]
