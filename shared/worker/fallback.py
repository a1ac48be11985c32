"""Whole batch first, then one by one: how a batched engine keeps one bad input from failing
the images that happened to share its batch. The worker server and the one-shot folder run
(`matting_worker.oneshot`) both go through `run_isolated`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Failed", "run_isolated"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Failed:
    """The place of an item whose run raised: its exception, kept for its own answer."""

    exc: Exception


def run_isolated(run: Callable[[list[T]], Sequence[R]], items: list[T]) -> list[R | Failed]:
    """`run(items)`; if it raises, `run([item])` for each item, so only the bad ones fail.

    One result per item, in order: the output, or `Failed` with what the item's run raised.
    A batch of one that fails is not run twice."""
    try:
        return list(run(items))
    except Exception as exc:
        if len(items) == 1:
            return [Failed(exc)]
        # here, not at the top: shared.logs brings the web stack (FastAPI), which
        # `mattepipe matte` would otherwise load at every start for a line it rarely writes
        from shared.logs import debug_log

        debug_log.warning("batch of %d failed (%s); retrying one by one", len(items), exc)
    out: list[R | Failed] = []
    for it in items:
        try:
            out.extend(run([it]))
        except Exception as exc:
            out.append(Failed(exc))
    return out
