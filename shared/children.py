"""A child process of a service that never outlives it.

The gateway starts children for work that must not share its GIL: an ingest
(`gateway.intake.ingest_process`) and a big zip's parts (`gateway.results.zip_processes`).
Each calls `die_with_parent` first thing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

__all__ = ["EXIT_ORPHANED", "ROOT", "child_env", "die_with_parent"]

ROOT = Path(__file__).resolve().parents[1]
"""The checkout (or installed tree) the services' packages are in."""

EXIT_ORPHANED = 4
"""A child's exit status when it found its parent gone."""

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when its parent's thread ends; anywhere:
    exit now if the parent is already gone (its pid is no longer our parent's)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(
                _PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)


def child_env() -> dict[str, str]:
    """This process's environment, with ROOT first on the path (`python -m` must find the
    child's module whatever the working directory)."""
    path = os.pathsep.join(dict.fromkeys(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    return {**os.environ, "PYTHONPATH": path}
