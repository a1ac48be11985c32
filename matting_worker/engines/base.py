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


class Engine(ABC):
    name: str = ""
    device: str = "cpu"
    max_batch_size: int = 8
    """The most images one `predict` call gets; the worker's batcher keeps to it."""

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
