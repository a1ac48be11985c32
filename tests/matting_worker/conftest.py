"""Fixtures shared by the matting worker's tests."""

from __future__ import annotations

import pytest

from matting_worker.stage import MattingStage
from shared.settings import Settings
from shared.storage import Storage


@pytest.fixture(scope="module")
def stage(storage: Storage) -> MattingStage:
    """A loaded `classical` matting stage over the module's own `storage` fixture (its data
    folder and input images)."""
    st = MattingStage(Settings(_env_file=None, data_dir=storage.root,  # type: ignore[call-arg]
                               default_model="classical", max_batch_size=8))
    st.load()
    return st
