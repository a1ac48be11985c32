"""One thread for the weight-free engine's small library calls: BLAS and OpenCV.

Every BLAS call the `classical` engine makes is small: least-squares fits of a 10-column
surface to a few thousand border pixels, and the dot products and norms of the closed-form
solve's conjugate gradient over a few ten thousand unknowns. Split over several threads such a
call costs more than it saves: each one wakes OpenBLAS's helper threads, which then spin
waiting for the next, and a busy machine makes the hand-over slow. Measured on a 640×480
cluttered photo (issue 16, point 4): the routing border model took 0.15 CPU s with two BLAS
threads and 0.02 s with one, and three 22 000-element dot products of the solve took as long
as its preconditioner.

OpenCV's own thread pool is the same story one level up: its resizes, blurs, morphology and
k-means on images of at most 1024 px are split over every core, and the pool's threads spin
between calls. With one OpenCV thread the engine's CPU per image fell by 12 % on the studio
path and 13 % on the cluttered path over 288 images of ten bench sets (two engines side by
side on the 2-core machine; issue 16's seventh speed pass), the wall clock did not move, and
every matte and confidence stayed bit for bit the same.

So the engine runs its work inside `one_thread()` and gives the process's settings back
afterwards (a worker's `WORKER_THREADS` still counts for every other engine). The settings
are the process's: an engine working in another thread meanwhile runs with one thread too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import cv2
from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread", "one_opencv_thread", "one_thread"]

_controller: ThreadpoolController | None = None


def _get_controller() -> ThreadpoolController:
    """The BLAS libraries loaded in this process, found once (a scan takes ~20 ms; a limit
    through the found controller ~20 µs). scipy's own OpenBLAS is loaded first, so that the
    scan sees it as well as numpy's and OpenCV's."""
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401 — loads scipy's BLAS before the scan

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread in every BLAS library of the process."""
    with _get_controller().limit(limits=1, user_api="blas"):
        yield


@contextmanager
def one_opencv_thread() -> Iterator[None]:
    """Run the block with OpenCV's parallel loops on the calling thread only."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@contextmanager
def one_thread() -> Iterator[None]:
    """Both: one BLAS thread and one OpenCV thread."""
    with one_blas_thread(), one_opencv_thread():
        yield
