"""One BLAS thread while the weight-free engine works.

Every BLAS call the `classical` engine makes is small: least-squares fits of a 10-column
surface to a few thousand border pixels, and the dot products and norms of the closed-form
solve's conjugate gradient over a few ten thousand unknowns. Split over several threads such a
call costs more than it saves: each one wakes OpenBLAS's helper threads, which then spin
waiting for the next, and a busy machine makes the hand-over slow. Measured on a 640×480
cluttered photo (issue 16, point 4): the routing border model took 0.15 CPU s with two BLAS
threads and 0.02 s with one, and three 22 000-element dot products of the solve took as long
as its preconditioner. So the engine runs its work with one BLAS thread and gives the process's
setting back afterwards (a worker's `WORKER_THREADS` still counts for every other engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]

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
