"""`python -m comparison_worker [--port N] [--worker-id ID] [--host H]`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings
from shared.stages import Stage
from shared.worker.entry import worker_main

if TYPE_CHECKING:
    from comparison_worker.stage import ComparisonStage


def make_stage(settings: Settings) -> ComparisonStage:
    """The stage, imported only now: `worker_main` has set the thread counts by then."""
    from comparison_worker.stage import ComparisonStage

    return ComparisonStage(settings)


if __name__ == "__main__":
    worker_main(Stage.COMPARISON, make_stage)
