"""Which threads a learned engine's steps ran on: the step-thread tests of every runtime."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from matting_worker.engines.base import Matte
from matting_worker.engines.learned import LearnedEngine

__all__ = ["predict_noting_threads"]


def predict_noting_threads(engine: LearnedEngine, images: Sequence[np.ndarray],
                           monkeypatch: pytest.MonkeyPatch) -> tuple[list[Matte], set[str]]:
    """`engine.predict(images)`, and the names of the threads its `preprocess` ran on."""
    seen: set[str] = set()
    real = engine.preprocess

    def recording(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        seen.add(threading.current_thread().name)
        return real(image, hw)

    monkeypatch.setattr(engine, "preprocess", recording)
    return engine.predict(images), seen
