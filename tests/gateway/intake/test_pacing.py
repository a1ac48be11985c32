"""`gateway.intake.pacing.Pace`: the idle and rate rule on its own, on a hand-driven clock
(the same rule `paced` applies on the event loop and the splice thread in its socket waits)."""

from __future__ import annotations

from pathlib import Path

from gateway.intake.pacing import Pace
from shared.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pace(tmp_path: Path, clock: Clock, **kw: float) -> Pace:
    return Pace(Settings(_env_file=None, data_dir=tmp_path, **kw), clock)


def test_idle_counts_from_the_latest_wait_not_from_the_last_byte(tmp_path: Path) -> None:
    """The reader's own work between two waits (a disk write) is nobody's idle time."""
    clock = Clock()
    p = pace(tmp_path, clock, upload_idle_timeout_s=10, min_upload_rate=0)
    p.waiting()
    clock.now += 4
    p.add(100)
    clock.now += 30  # the reader busy with the piece
    p.waiting()
    wait, reason = p.due()
    assert wait == 10 and "no body bytes for 10 s" in reason
    clock.now += 10
    assert p.due()[0] <= 0


def test_the_rate_floor_takes_over_after_the_grace(tmp_path: Path) -> None:
    clock = Clock()
    p = pace(tmp_path, clock, upload_idle_timeout_s=60, min_upload_rate=1000,
             upload_rate_grace_s=5)
    p.waiting()
    assert p.due()[0] == 5  # the grace first
    clock.now += 5
    p.add(20_000)  # 20 s worth at the floor
    p.waiting()
    wait, _ = p.due()
    assert wait == 15
    clock.now += 16
    wait, reason = p.due()
    assert wait < 0 and "too slow" in reason and "20000 bytes" in reason


def test_the_clock_starts_at_the_first_wait(tmp_path: Path) -> None:
    clock = Clock()
    p = pace(tmp_path, clock, upload_idle_timeout_s=10, min_upload_rate=0)
    clock.now += 1000  # made long before the body is waited for
    assert p.due()[0] == 10
