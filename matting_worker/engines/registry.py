"""Engines by name: the built-ins, and users' model files found in MODELS_DIR.

Names and listing are `shared.catalogue`'s (pure data, so the gateway validates `model=`
without importing any engine); this module builds the engine a name stands for. Loading
happens in the worker that runs the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matting_worker.engines.base import Engine
from matting_worker.engines.classical import ClassicalEngine
from matting_worker.engines.identity import IdentityEngine
from matting_worker.engines.presets import resolve_preset
from shared.catalogue import BUILTIN_NAMES, MODEL_SUFFIXES, ModelInfo, list_models
from shared.errors import ConfigError
from shared.model_fetch import ZooSource, fetch_model

__all__ = [
    "BUILTIN_ENGINES",
    "MODEL_SUFFIXES",
    "ModelInfo",
    "ModelNotDownloaded",
    "UnknownModel",
    "create_engine",
    "find_model",
    "list_models",
]


def _portrait() -> Engine:
    from matting_worker.engines.portrait import PortraitEngine

    return PortraitEngine()


def _classical_shadows() -> Engine:
    engine = ClassicalEngine(keep_shadows=True)
    engine.name = "classical-shadows"
    return engine


BUILTIN_ENGINES: dict[str, Callable[[], Engine]] = {
    "classical": ClassicalEngine,
    "portrait": _portrait,
    "identity": IdentityEngine,
    "classical-shadows": _classical_shadows,
}
assert tuple(BUILTIN_ENGINES) == BUILTIN_NAMES, "shared.catalogue lists the same built-ins"


class UnknownModel(ConfigError, KeyError):
    """No built-in engine and no model file in MODELS_DIR has this name."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available

    def __str__(self) -> str:
        return str(self.args[0])


class ModelNotDownloaded(UnknownModel):
    """A zoo model whose file is not in MODELS_DIR, and this process may not download it."""


def _from_zoo(name: str, models_dir: Path | None, zoo: ZooSource, missing: UnknownModel
              ) -> None:
    """Download a zoo model named `name` into MODELS_DIR, or say how to get it; re-raises
    `missing` for a name the zoo does not know either."""
    model = zoo.zoo.get(name)
    if model is None:
        raise missing
    if not zoo.download or models_dir is None:
        raise ModelNotDownloaded(
            f"model {name!r} is not downloaded: run `mattepipe models pull {name}` on the "
            "workers' MODELS_DIR, or set MODEL_DOWNLOAD=1 to fetch it on first use",
            missing.available,
        ) from None
    fetch_model(model, models_dir, zoo.base_url)


def find_model(name: str, models_dir: Path | None) -> ModelInfo:
    models = list_models(models_dir)
    for info in models:
        if info.name == name:
            return info
    names = [m.name for m in models]
    raise UnknownModel(f"unknown model {name!r}; available: {', '.join(names)}", names)


def create_engine(name: str, models_dir: Path | None, zoo: ZooSource | None = None) -> Engine:
    """A new, not yet loaded engine; UnknownModel (a KeyError) when there is no such name.

    With `zoo`, a zoo model missing from MODELS_DIR is downloaded first (ModelDownloadError
    when that fails) or, downloads being off, ModelNotDownloaded says how to get it.
    A broken `<stem>.json` raises PresetError (a ValueError) naming the file and field.
    """
    try:
        info = find_model(name, models_dir)
    except UnknownModel as missing:
        if zoo is None:
            raise
        _from_zoo(name, models_dir, zoo, missing)
        info = find_model(name, models_dir)
    if info.kind == "builtin":
        return BUILTIN_ENGINES[name]()
    assert models_dir is not None  # a model file was found in it
    path = models_dir / info.path  # the catalogue names files relative to MODELS_DIR
    preset = resolve_preset(path)
    if info.kind == "onnx":
        from matting_worker.engines.onnx_model import OnnxEngine

        return OnnxEngine(name, path, preset)
    if info.kind == "torchscript":
        from matting_worker.engines.torch_model import TorchEngine

        return TorchEngine(name, path, preset)
    from matting_worker.engines.tflite_model import TFLiteEngine

    return TFLiteEngine(name, path, preset)
