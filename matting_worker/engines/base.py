"""The one interface every matting engine implements (rembg's sessions are the model).

An engine gets a batch of decoded RGB images and returns one matte per image, at the image's
own size. Everything else (decode, batching, encode, writing files) is the worker's job, so an
engine is a pure function of pixels and easy to test and benchmark on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.errors import EngineError

__all__ = ["Engine", "EngineError", "Matte", "RGBImage"]

RGBImage = npt.NDArray[np.uint8]
"""H×W×3, uint8, RGB."""


@dataclass
class Matte:
    alpha: npt.NDArray[np.float32]
    """H×W in [0, 1], the input's size."""
    foreground: RGBImage | None = None
    """Estimated foreground colours (H×W×3) for fringe-free RGBA; None: use the input's."""
    confidence: float | None = None
    """How sure the engine is that this cut-out is right, in [0, 1] (1: right). None: the
    engine has no view; the worker then derives one from the matte (`output_confidence`)."""
    route: str | None = None
    """Which of the engine's own paths made it (e.g. classical's 'studio' or 'cluttered')."""
    fallback: dict[str, Any] | None = None
    """Set by the worker when this matte replaced a low-confidence one: which engine gave
    way, at what confidence (`matting_worker.stage`)."""


class Engine(ABC):
    name: str = ""
    device: str = "cpu"
    max_batch_size: int = 8
    """The most images one `predict` call gets; the worker's batcher keeps to it."""
    scored: bool = True
    """Whether its mattes get a confidence; `identity` (alpha 1 everywhere, a measurement of
    the pipeline, not a cut-out) has none to give."""
    falls_back: bool = False
    """Whether a low-confidence matte of this engine may be redone by FALLBACK_MODEL (the
    weight-free engine: it knows when it is guessing)."""

    def load(self) -> None:  # noqa: B027 — optional hook
        """Heavy one-time set-up (weights, sessions). Called once before the first predict."""

    def unload(self) -> None:  # noqa: B027 — optional hook
        """Drop the heavy objects `load` made, so their (GPU) memory can be freed; the worker
        calls it when it evicts the engine, and never uses the engine afterwards."""

    def watched_files(self) -> tuple[Path, ...]:
        """The files whose change means this engine must be loaded again (none: built-in)."""
        return ()

    @abstractmethod
    def predict(self, images: Sequence[RGBImage]) -> list[Matte]:
        """One matte per image, same order, each at its image's size."""

    def info(self) -> dict[str, object]:
        return {"name": self.name, "device": self.device, "max_batch_size": self.max_batch_size}
