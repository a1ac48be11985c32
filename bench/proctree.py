"""Peak resident memory of a whole process tree (a supervisor and its children), from /proc.

A parent's own peak (VmHWM) misses its children, and children come and go; summing VmRSS
over the live tree every SAMPLE_S catches what the tree held at once.
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["TreePeak", "tree_rss_kib"]

SAMPLE_S = 0.05


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    """VmRSS of `root` and every descendant, now."""
    kids = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kib(pid)
        todo.extend(kids.get(pid, ()))
    return total


class TreePeak:
    """`with TreePeak(pid) as peak: …` then `peak.mib`: the highest tree total seen."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.kib = max(self.kib, tree_rss_kib(self.root))
            self._stop.wait(SAMPLE_S)

    @property
    def mib(self) -> float:
        return self.kib / 1024

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
