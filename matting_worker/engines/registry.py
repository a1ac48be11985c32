"""Engines by name: the built-ins, and users' model files found in MODELS_DIR.

A model's name is its file stem, so `u2netp.onnx` is `model=u2netp`; rembg's model folder
works as MODELS_DIR as it is. Listing reads names only (the gateway validates `model=` with
it on every upload); loading happens in the worker that runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matting_worker.engines.base import Engine
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.identity import IdentityEngine
from matting_worker.engines.presets import match_preset, resolve_preset
from shared.errors import ConfigError

__all__ = [
    "BUILTIN_ENGINES",
    "MODEL_SUFFIXES",
    "ModelInfo",
    "UnknownModel",
    "create_engine",
    "find_model",
    "list_models",
]

log = logging.getLogger(__name__)


def _portrait() -> Engine:
    from matting_worker.engines.portrait import PortraitEngine

    return PortraitEngine()


BUILTIN_ENGINES: dict[str, Callable[[], Engine]] = {
    "classical": ClassicalEngine,
    "portrait": _portrait,
    "identity": IdentityEngine,
}

MODEL_SUFFIXES: dict[str, str] = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".torchscript": "torchscript",
    ".tflite": "tflite",
}
"""File suffix → runtime; on a name clash the first suffix here wins."""


class UnknownModel(ConfigError, KeyError):
    """No built-in engine and no model file in MODELS_DIR has this name."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    """'builtin', 'onnx', 'torchscript' or 'tflite'."""
    path: str = ""
    preset: str = ""
    """The preset its file name implies (a JSON override may change it at load)."""
    size: int = 0
    """File size in bytes; 0 for built-ins."""


def list_models(models_dir: Path | None) -> list[ModelInfo]:
    """Cheap: names only, nothing loaded (the gateway calls this to validate `model=`)."""
    found = [ModelInfo(name, "builtin") for name in BUILTIN_ENGINES]
    if models_dir is None or not models_dir.is_dir():
        return found
    taken = set(BUILTIN_ENGINES)
    order = list(MODEL_SUFFIXES)
    files = [
        p for p in models_dir.iterdir()
        if p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    files.sort(key=lambda p: (p.stem, order.index(p.suffix.lower())))
    for path in files:
        if path.stem in taken:
            log.warning("model file %s ignored: the name %r is taken", path, path.stem)
            continue
        taken.add(path.stem)
        kind = MODEL_SUFFIXES[path.suffix.lower()]
        found.append(ModelInfo(path.stem, kind, str(path), match_preset(path.stem).name,
                               path.stat().st_size))
    return found


def find_model(name: str, models_dir: Path | None) -> ModelInfo:
    models = list_models(models_dir)
    for info in models:
        if info.name == name:
            return info
    names = [m.name for m in models]
    raise UnknownModel(f"unknown model {name!r}; available: {', '.join(names)}", names)


def create_engine(name: str, models_dir: Path | None) -> Engine:
    """A new, not yet loaded engine; UnknownModel (a KeyError) when there is no such name.

    A broken `<stem>.json` raises PresetError (a ValueError) naming the file and field.
    """
    info = find_model(name, models_dir)
    if info.kind == "builtin":
        return BUILTIN_ENGINES[name]()
    path = Path(info.path)
    preset = resolve_preset(path)
    if info.kind == "onnx":
        from matting_worker.engines.onnx_model import OnnxEngine

        return OnnxEngine(name, path, preset)
    if info.kind == "torchscript":
        from matting_worker.engines.torch_model import TorchEngine

        return TorchEngine(name, path, preset)
    from matting_worker.engines.tflite_model import TFLiteEngine

    return TFLiteEngine(name, path, preset)
