"""The living child processes of a process, read from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["living_children"]


def living_children(parent: int, module: str) -> list[int]:
    """Children of `parent` whose command line names `module`, alive (not zombies)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and module.encode() in cmd:
            found.append(int(pid))
    return found
