"""CPU priority between the stack's processes: request latency before throughput work.

On a box with few cores the stage workers (decode, inference, encode) can keep every core
busy; the gateway's HTTP answers (`/status`, pages) then wait for a CPU behind them, which
is what held `/status` p99 far above its p50 during a big job (README, "`/status` while a big
job runs"). A worker therefore lowers its own priority at start (`lower_priority`,
WORKER_NICE): the kernel still gives it every cycle nobody else wants, so an otherwise idle
machine runs the job as fast as before, but a runnable gateway goes first.

Only a process's *whole* priority is lowered, never one thread of the gateway: a low-priority
thread holding the GIL would make the gateway's event loop wait for it (priority inversion).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["MAX_NICE", "lower_priority", "niceness"]

log = logging.getLogger("shared.priority")

MAX_NICE = 19
"""The lowest CPU priority Unix has."""


def niceness() -> int:
    """This thread's niceness now (0 where the platform has none)."""
    if sys.platform == "win32":
        return 0
    return os.getpriority(os.PRIO_PROCESS, 0)


def lower_priority(nice: int) -> int:
    """Lower this process's CPU priority to niceness `nice` (0..MAX_NICE); never raises it
    (that takes privileges, and an operator's `nice -n 15` stays). Call it before the process
    starts threads: on Linux a niceness is per thread, and new threads inherit their
    creator's. Answers the niceness now."""
    if not 0 <= nice <= MAX_NICE:
        raise ValueError(f"a niceness is 0..{MAX_NICE}, not {nice}")
    if sys.platform == "win32":
        return 0
    now = niceness()
    if nice > now:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        now = niceness()
        log.debug("CPU priority lowered to niceness %d", now)
    return now
