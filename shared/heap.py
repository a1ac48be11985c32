"""Keep freed heap for reuse instead of handing it back to the kernel after every upload batch.

An upload body arrives as ~1 MiB bytes objects, one per socket read (`shared.serve`), kept
until their batch is written (`gateway.intake.spool`: batches of WRITE_BYTES, two held at
most) and then freed together. glibc's malloc serves such blocks from its heap once its dynamic mmap
threshold has risen past them, but it also gives the heap's free top back to the kernel as
soon as that exceeds its trim threshold (twice the mmap threshold, ~2 MiB here): each freed
batch was trimmed, and the next reads faulted fresh zeroed pages in again. A 1 GiB
`POST /upload` took 60 000–130 000 minor page faults and twice the CPU time of a tus PATCH
(1 MiB batches, just under the threshold), which is what held it to ~0.3 of a raw socket
(BENCHMARKS.md, "Upload speed: the page faults"). `keep_heap` fixes both thresholds: blocks
up to HEAP_MMAP_BYTES come from the heap, and up to HEAP_TRIM_BYTES of free heap is kept for
the next batch, so the same pages carry every batch of every upload. The resident memory
is then the peak of two batches plus that slack, as flat as before, only no longer given back
and taken again a thousand times per GiB.

glibc only (Linux); elsewhere (musl, macOS) `keep_heap` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["HEAP_MMAP_BYTES", "HEAP_TRIM_BYTES", "keep_heap"]

HEAP_MMAP_BYTES = 4 << 20
"""Blocks smaller than this come from the heap, larger ones get their own mmap: above any body
piece (a socket read is at most 1 MiB, `shared.serve.READ_BYTES`; pieces that pile up while
the app is busy are joined, and flow control caps that near one read more). glibc's own
threshold starts at 128 KiB and only rises as big blocks are freed; a fixed one also keeps
truly big buffers (decoded images) out of the heap, where they would fragment it."""
HEAP_TRIM_BYTES = 16 << 20
"""Free heap kept before any is given back: well above what freeing one batch returns (a
batch is `gateway.intake.spool.WRITE_BYTES`, 1 MiB, plus its last piece; two are held per
upload, and a few uploads at once free theirs in turn), so that freeing a batch never trims
what the next one is about to fault in again."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
"""`mallopt` parameters, from glibc's malloc.h."""


def keep_heap(trim: int = HEAP_TRIM_BYTES, mmap: int = HEAP_MMAP_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds for this whole process (see the module); True when
    they were set, False off glibc. Call once at a service's start, before it takes bodies."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc: musl's mallopt accepts nothing, and its heap works otherwise
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting either one freezes glibc's dynamic adjustment.
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
