"""`shared.heap.keep_heap`: freed upload batches stay in the heap for the next ones. A fresh
Python process churns the way an upload does (1 MiB pieces, a batch of them freed together)
with and without it; its own minor page faults (`getrusage`) tell whether the freed pages
were given back to the kernel and faulted in again. glibc only: elsewhere `keep_heap` is a
no-op and the test skips."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from shared.heap import keep_heap

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 64
PIECES = 8
"""Per round 8 pieces of 1 MiB held, then freed together: two 4 MiB upload batches."""

CHURN = f"""
import resource, sys
from shared.heap import keep_heap
if sys.argv[1] == "kept":
    assert keep_heap()
def batch():
    held = [b"x" * (1 << 20) for _ in range({PIECES})]
    del held
batch(); batch()  # the heap's first growth, and glibc's own threshold past 1 MiB
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _glibc() -> bool:
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    return int(out.stdout)


@pytest.mark.skipif(not _glibc(), reason="keep_heap sets glibc's malloc thresholds")
def test_freed_batches_are_not_faulted_in_again() -> None:
    pages = ROUNDS * PIECES * 256  # 4 KiB pages the churn writes
    kept, default = _faults("kept"), _faults("default")
    # With the thresholds set, the churn reuses the pages of its first rounds: well under one
    # page in a hundred faults (none, on glibc 2.36). glibc's defaults trim each freed batch,
    # so nearly every page faults again: the control, showing the measure sees the problem.
    assert kept < pages // 100, (kept, default, pages)
    assert default > 10 * max(kept, 100), (kept, default, pages)


def test_keep_heap_says_whether_it_applied() -> None:
    assert keep_heap() is _glibc()  # idempotent: the gateway calls it once, tests again
