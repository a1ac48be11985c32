"""Engines by name: the built-ins, and users' model files found in MODELS_DIR."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import Engine
from .classical import ClassicalEngine
from .identity import IdentityEngine

__all__ = ["BUILTIN_ENGINES", "ModelInfo", "UnknownModel", "create_engine", "list_models"]

BUILTIN_ENGINES: dict[str, Callable[[], Engine]] = {
    "classical": ClassicalEngine,
    "identity": IdentityEngine,
}


class UnknownModel(KeyError):
    """No built-in engine and no model file in MODELS_DIR has this name."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    """'builtin', 'onnx', 'torchscript' or 'tflite'."""
    path: str = ""


def list_models(models_dir: Path) -> list[ModelInfo]:
    """Cheap: names only, nothing loaded (the gateway calls this to validate `model=`)."""
    return [ModelInfo(name, "builtin") for name in BUILTIN_ENGINES]


def create_engine(name: str, models_dir: Path) -> Engine:
    factory = BUILTIN_ENGINES.get(name)
    if factory is None:
        known = ", ".join(m.name for m in list_models(models_dir))
        raise UnknownModel(f"unknown model {name!r}; available: {known}")
    return factory()
