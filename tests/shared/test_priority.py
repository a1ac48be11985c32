"""`shared.priority`: a process lowers its own CPU priority, never raises it, and refuses a
niceness Unix has not. Each case runs in a fresh interpreter: a lowered niceness cannot be
raised again without privileges, and must not leak into the test process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.priority import MAX_NICE, lower_priority, niceness
from tests.support.servers import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix niceness")


def _in_child(code: str, nice: int = 0) -> str:
    """Run `code` in a fresh interpreter started at niceness `nice`; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60,
                         preexec_fn=(lambda: os.nice(nice)) if nice else None)
    return out.stdout.strip()


def test_lowers_to_the_niceness_asked_and_new_threads_inherit_it() -> None:
    code = ("import threading, os; from shared.priority import lower_priority, niceness\n"
            "print(lower_priority(7)); got = []\n"
            "t = threading.Thread(target=lambda: got.append(niceness())); t.start(); t.join()\n"
            "print(got[0])")
    base = niceness()
    assert _in_child(code).split() == [str(max(7, base))] * 2


def test_never_raises_a_priority_already_lower() -> None:
    # started at niceness 12 (as by `nice -n 12`): asking for 5 keeps 12
    code = "from shared.priority import lower_priority; print(lower_priority(5))"
    assert int(_in_child(code, nice=12)) >= 12


@pytest.mark.parametrize("bad", [-1, MAX_NICE + 1, 40])
def test_a_niceness_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="niceness"):
        lower_priority(bad)


def test_zero_changes_nothing() -> None:
    before = niceness()
    assert lower_priority(0) == before
    assert niceness() == before
