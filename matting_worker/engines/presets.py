"""How to feed a user's model and read its answer, chosen by file name, overridable by JSON.

A bare `.onnx` file says nothing about the size it was trained at, its normalisation or
whether its output is a logit. rembg's model zoo fixed those conventions per file name, and
MODNet and RobustVideoMatting have their own; a user who points MODELS_DIR at rembg's folder
should get the same answers as rembg. `<stem>.json` beside a model overrides any field, and
may start from another preset with `{"preset": "modnet", ...}`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.catalogue import PRESET_PATTERNS, preset_name
from shared.errors import ConfigError

__all__ = ["PRESETS", "Preset", "PresetError", "match_preset", "resolve_preset"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PresetError(ConfigError, ValueError):
    """A model's JSON override is unreadable or invalid; the message names file and field."""


class Preset(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "generic"
    size_policy: Literal["fixed", "ref", "native"] = "fixed"
    """fixed: resize to `input_size`; ref: MODNet's rule around `ref_size`, sides rounded
    down to `multiple`; native: keep the image's size, long side capped at `ref_size`."""
    input_size: tuple[int, int] = (512, 512)
    """(height, width) for `fixed`; a model with a static input shape uses its own."""
    ref_size: int = Field(default=512, ge=16)
    multiple: int = Field(default=32, ge=1)
    scale: Literal["255", "max"] = "255"
    """Pixels divided by 255, or by the image's maximum as rembg does."""
    color: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: Literal["auto", "nchw", "nhwc"] = "auto"
    activation: Literal["none", "sigmoid", "auto"] = "none"
    """auto: sigmoid only when the output leaves [0, 1] (a logit)."""
    minmax: bool = False
    """Stretch each matte to [0, 1] (rembg does this for every zoo model)."""
    output: int = 0
    """Which model output is the matte (negative counts from the end)."""
    channel: int = Field(default=0, ge=0)
    recurrent: bool = False
    """RobustVideoMatting: zero recurrent states in, one frame at a time, `pha` out."""
    downsample_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    """RVM's; None: min(1, 512 / long side), its authors' rule."""
    half: bool = True
    """Half precision allowed on CUDA (tried once at load, dropped if the model breaks)."""
    refine: bool = False
    """Refine the edge at full resolution with the band solver (for coarse segmenters)."""
    max_batch_size: int = Field(default=8, ge=1)
    resample: Literal["rembg", "fine"] = "fine"
    """rembg: the image shrunk with Pillow's LANCZOS, the matte cut to 8 bits at the model's
    size and grown back with LANCZOS — rembg's own steps, so its zoo files give its answers.
    fine: OpenCV's area filter in, the float matte grown bilinearly (no 8-bit step); sharper
    on thin edges, a few levels away from rembg's. A `<stem>.json` may pick either."""
    classes: tuple[int, ...] | None = None
    """A segmenter with one output channel per class (U²-Net cloth): the matte is the pixels
    whose most likely class is one of these (rembg's `cc=attire` is 1, 2, 3). None: the
    output is a matte (`channel`)."""

    @field_validator("input_size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        return value

    @field_validator("input_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError("input_size must be at least 8 pixels a side")
        return value

    @field_validator("classes")
    @classmethod
    def _labels(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or min(value) < 0 or max(value) > 255):
            raise ValueError("classes must be one or more class numbers from 0 to 255")
        return value

    @field_validator("std")
    @classmethod
    def _nonzero(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v == 0 for v in value):
            raise ValueError("std values must be non-zero")
        return value


# rembg's zoo (rembg/sessions/*.py, 2.0.86): each family's size, statistics, output handling.
_U2NET = Preset(
    name="u2net", input_size=(320, 320), scale="max", minmax=True, max_batch_size=16,
    resample="rembg",
)
_ISNET = Preset(
    name="isnet", input_size=(1024, 1024), scale="max", mean=(0.5, 0.5, 0.5),
    std=(1.0, 1.0, 1.0), minmax=True, max_batch_size=4, resample="rembg",
)
_BIREFNET = Preset(
    name="birefnet", input_size=(1024, 1024), scale="max", activation="sigmoid", minmax=True,
    max_batch_size=2, resample="rembg",
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # A model nobody described: ImageNet statistics, and a logit is recognised as one.
        Preset(activation="auto"),
        _U2NET,
        _U2NET.model_copy(update={"name": "silueta"}),
        # 4 classes out (background, upper, lower, full body); the matte is rembg's `attire`.
        _U2NET.model_copy(update={"name": "u2net_cloth_seg", "input_size": (768, 768),
                                  "minmax": False, "classes": (1, 2, 3),
                                  "max_batch_size": 2}),
        _ISNET,
        # isnet-anime keeps ImageNet's mean (std 1.0) where isnet-general-use takes 0.5.
        _ISNET.model_copy(update={"name": "isnet-anime", "mean": IMAGENET_MEAN}),
        # BEN (rembg's ben_custom): IS-Net's statistics and handling.
        _ISNET.model_copy(update={"name": "ben", "max_batch_size": 2}),
        _BIREFNET,
        _BIREFNET.model_copy(update={"name": "birefnet-hr", "input_size": (2048, 2048),
                                     "max_batch_size": 1}),
        # rembg's "bria-rmbg" is RMBG-2.0 (BiRefNet-based, sigmoid inside the graph).
        Preset(name="bria-rmbg", input_size=(1024, 1024), scale="max", minmax=True,
               max_batch_size=2, resample="rembg"),
        # RMBG-1.4 (IS-Net-based): its model card's normalisation, mean 0.5, std 1.0.
        Preset(name="rmbg-1.4", input_size=(1024, 1024), mean=(0.5, 0.5, 0.5),
               std=(1.0, 1.0, 1.0), minmax=True, max_batch_size=4),
        Preset(name="modnet", size_policy="ref", ref_size=512, multiple=32,
               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output=-1),
        Preset(name="rvm", size_policy="native", ref_size=2048, multiple=4,
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), output=1, recurrent=True,
               max_batch_size=4),
        Preset(name="selfie", input_size=(256, 256), mean=(0.0, 0.0, 0.0),
               std=(1.0, 1.0, 1.0), layout="nhwc", half=False, refine=True,
               max_batch_size=16),
    )
}

_unknown = {name for _, name in PRESET_PATTERNS} - set(PRESETS)
assert not _unknown, f"shared.catalogue names presets that do not exist: {_unknown}"


def match_preset(stem: str) -> Preset:
    """The preset a file name implies (`shared.catalogue.preset_name`); `generic` when
    nothing matches."""
    return PRESETS[preset_name(stem)]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def resolve_preset(model_path: Path) -> Preset:
    """The file-name preset, with `<stem>.json` beside the model applied on top."""
    base = match_preset(model_path.stem)
    override = model_path.with_suffix(".json")
    if not override.is_file():
        return base
    try:
        data = json.loads(override.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PresetError(f"{override}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PresetError(f"{override}: must be a JSON object of preset fields")
    start = data.pop("preset", None)
    if start is not None:
        if start not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise PresetError(f"{override}: preset: unknown {start!r}; known: {known}")
        base = PRESETS[start]
    data.setdefault("name", f"{base.name}+json")
    try:
        return Preset.model_validate({**base.model_dump(), **data})
    except ValidationError as exc:
        raise PresetError(f"{override}: {_describe(exc)}") from exc
