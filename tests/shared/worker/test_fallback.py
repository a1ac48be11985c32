"""`run_isolated`: the whole batch, then one by one, so a bad item fails alone."""

from __future__ import annotations

import pytest

from shared.worker.fallback import Failed, run_isolated


def upper(items: list[str]) -> list[str]:
    if "poison" in items:
        raise ValueError("poisoned batch")
    return [s.upper() for s in items]


def test_a_good_batch_runs_once() -> None:
    calls: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        calls.append(items)
        return upper(items)

    assert run_isolated(run, ["a", "b"]) == ["A", "B"]
    assert calls == [["a", "b"]]


def test_a_poisoned_item_fails_alone() -> None:
    out = run_isolated(upper, ["a", "poison", "c"])
    assert out[0] == "A" and out[2] == "C"
    assert isinstance(out[1], Failed) and "poisoned" in str(out[1].exc)


@pytest.mark.parametrize("items", [["poison"], ["poison", "poison"]])
def test_a_failing_item_is_run_once_alone(items: list[str]) -> None:
    calls: list[list[str]] = []

    def run(batch: list[str]) -> list[str]:
        calls.append(batch)
        return upper(batch)

    out = run_isolated(run, items)
    assert all(isinstance(o, Failed) for o in out) and len(out) == len(items)
    assert calls.count(["poison"]) == len(items)  # a batch of one is not retried
