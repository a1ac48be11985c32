"""The living child processes of a process, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["living_children"]


def living_children(parent: int, module: str) -> list[int]:
    """Children of `parent` that run `module` (one of their arguments is its name), alive
    (not zombies)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and module.encode() in args:
            found.append(int(pid))
    return found
