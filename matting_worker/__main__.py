"""`python -m matting_worker [--port N] [--worker-id ID] [--host H]`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings
from shared.stages import Stage
from shared.worker.entry import worker_main

if TYPE_CHECKING:
    from matting_worker.stage import MattingStage


def make_stage(settings: Settings) -> MattingStage:
    """The stage, imported only now: `worker_main` has set the thread counts by then."""
    from matting_worker.stage import MattingStage

    return MattingStage(settings)


if __name__ == "__main__":
    worker_main(Stage.MATTING, make_stage)
