"""The model catalogue: which engine names exist, without loading (or importing) any engine.

Built-in engines have fixed names; a user's model is a file in MODELS_DIR whose stem is its
name (`u2netp.onnx` is `model=u2netp`, so rembg's model folder works as MODELS_DIR as it is),
and its file name implies a preset (how to feed it). The gateway validates `model=` with
`list_models` on every upload; `matting_worker.engines.registry` builds the engines.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BUILTIN_ABOUT",
    "BUILTIN_NAMES",
    "MODEL_SUFFIXES",
    "PRESET_PATTERNS",
    "ModelInfo",
    "ModelKind",
    "list_models",
    "model_names",
    "preset_name",
]

log = logging.getLogger("shared.catalogue")

BUILTIN_NAMES: tuple[str, ...] = ("classical", "portrait", "identity", "classical-shadows")
"""The engines that need no model file, in listing order."""
BUILTIN_ABOUT: dict[str, tuple[str, str]] = {
    "classical": ("Weight-free: the backdrop modelled from the image border; studio and "
                  "product shots.", "mattepipe's own (no weights)"),
    "portrait": ("MediaPipe selfie segmentation refined at full resolution: people.",
                 "Apache-2.0 (the shipped MediaPipe model)"),
    "identity": ("Alpha 1 everywhere: measures the pipeline itself.", "mattepipe's own"),
    "classical-shadows": ("`classical` that keeps soft contact shadows in the cut-out "
                          "(`classical` takes them for backdrop).", "mattepipe's own (no weights)"),
}
"""Built-in → (what it is for, licence), for `GET /models` and `mattepipe models list`."""

ModelKind = Literal["builtin", "onnx", "torchscript", "tflite"]

MODEL_SUFFIXES: dict[str, ModelKind] = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".torchscript": "torchscript",
    ".tflite": "tflite",
}
"""File suffix → runtime; on a name clash the first suffix here wins."""

PRESET_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^u2net[-_]?cloth", "u2net_cloth_seg"),  # 4-class segmenter, before plain u2net
    (r"^u2net", "u2net"),  # u2net, u2netp, u2net_human_seg
    (r"^silueta", "silueta"),
    (r"^(isnet|dis)[-_]anime", "isnet-anime"),
    (r"^(isnet|dis)([-_]|$)", "isnet"),
    (r"^ben([-_]|$)", "ben"),  # rembg's ben_custom
    (r"^birefnet.*[-_]hr([-_]|$)", "birefnet-hr"),
    (r"^birefnet", "birefnet"),
    (r"^(bria[-_])?rmbg[-_]?1[._]4", "rmbg-1.4"),
    (r"^bria[-_]rmbg|^rmbg", "bria-rmbg"),
    (r"modnet", "modnet"),
    (r"^rvm([-_]|$)|robust[-_]?video[-_]?matting", "rvm"),
    (r"selfie[-_]?segmentation", "selfie"),
)
"""File stem (lower-cased) → preset name; the first match wins, `generic` when none does.
The presets themselves (`matting_worker.engines.presets.PRESETS`) are the worker's."""


def preset_name(stem: str) -> str:
    """The preset a model file's stem implies; `generic` when nothing matches."""
    lowered = stem.lower()
    for pattern, name in PRESET_PATTERNS:
        if re.search(pattern, lowered):
            return name
    return "generic"


class ModelInfo(BaseModel):
    """One engine a job may name in `model=`."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: ModelKind = Field(description="'builtin', 'onnx', 'torchscript' or 'tflite'")
    path: str = Field(
        default="",
        description="the model file's name inside MODELS_DIR (never an absolute path: /models "
                    "is public); empty for built-ins",
    )
    preset: str = Field(
        default="",
        description="the preset its file name implies (a JSON override may change it at load)",
    )
    size: int = Field(default=0, description="file size in bytes; 0 for built-ins")
    present: bool = Field(
        default=True,
        description="false: a zoo model not downloaded yet (`mattepipe models pull NAME`, or "
                    "a worker with MODEL_DOWNLOAD=1 fetches it on first use)",
    )
    description: str = Field(default="", description="what it is for (zoo models)")
    licence: str = Field(default="", description="as its source publishes it (zoo models)")


def list_models(models_dir: Path | None) -> list[ModelInfo]:
    """Cheap: names only, nothing loaded: the built-ins, then MODELS_DIR's model files by
    name (a file whose stem is already taken is skipped, with a warning)."""
    found = [ModelInfo(name=name, kind="builtin", description=BUILTIN_ABOUT[name][0],
                       licence=BUILTIN_ABOUT[name][1]) for name in BUILTIN_NAMES]
    if models_dir is None or not models_dir.is_dir():
        return found
    taken = set(BUILTIN_NAMES)
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
        found.append(ModelInfo(
            name=path.stem, kind=MODEL_SUFFIXES[path.suffix.lower()], path=path.name,
            preset=preset_name(path.stem), size=path.stat().st_size,
        ))
    return found


def model_names(models_dir: Path | None) -> list[str]:
    return [m.name for m in list_models(models_dir)]
