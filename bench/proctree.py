"""Peak resident memory and CPU time of a whole process tree (a supervisor and its children),
from /proc.

A parent's own peak (VmHWM) misses its children, and children come and go; summing VmRSS
over the live tree every SAMPLE_S catches what the tree held at once. Each process's own
peak is kept too, by a label from its command line (`matting-worker-1`, `gateway`, …), so a
set of services can be read process by process. CPU seconds (user + system, from
/proc/<pid>/stat) are what a run cost the machine whatever else shares it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bench.stack_run import service_label

__all__ = ["TreePeak", "cpu_s", "tree_cpu_s", "tree_rss_kib"]

SAMPLE_S = 0.05
_TICKS = os.sysconf("SC_CLK_TCK")


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


def _tree(root: int) -> list[int]:
    kids = _children()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(kids.get(pid, ()))
    return pids


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
    return sum(_rss_kib(pid) for pid in _tree(root))


def cpu_s(pid: int) -> tuple[float, float]:
    """User + system CPU seconds `pid` has used so far: its own, and its children's that it
    waited for (utime + stime, cutime + cstime); OSError when it is gone."""
    text = Path(f"/proc/{pid}/stat").read_text()
    f = text[text.rfind(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / _TICKS, (int(f[13]) + int(f[14])) / _TICKS


def tree_cpu_s(root: int) -> float:
    """User + system CPU seconds the live tree's processes have used so far (their own, and
    their children's that they waited for)."""
    total = 0.0
    for pid in _tree(root):
        try:
            own, reaped = cpu_s(pid)
        except OSError:
            continue
        total += own + reaped
    return total


class TreePeak:
    """`with TreePeak(pid) as peak: …` then `peak.mib` (the highest tree total seen) and
    `peak.by_label` (each process's own highest, MiB)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.kib = 0
        self.by_label: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in _tree(self.root):
                kib = _rss_kib(pid)
                total += kib
                label = service_label(pid)
                self.by_label[label] = max(self.by_label.get(label, 0.0), kib / 1024)
            self.kib = max(self.kib, total)
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
