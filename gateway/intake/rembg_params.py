"""rembg's server parameters (rembg 2.0.86, `rembg s`: `/api/remove`) mapped onto mattepipe's.

rembg's names, types, ranges and defaults are kept, so a rembg client's request means the
same here; each one maps onto the matting request's options (`shared.schemas.MattingParams`,
`shared.finishing`), or is refused with a 422 that names it when mattepipe cannot do what it
asks, never ignored:

| rembg | default | here |
|---|---|---|
| `model` | `bria-rmbg` | an engine name (`GET /models`); absent: the gateway's DEFAULT_MODEL |
| `a` (alpha matting) | false | true: 422 (the engines refine edges their own way) |
| `af`, `ab` (0–255), `ae` (≥ 0) | 240, 10, 10 | checked; used by rembg only with `a` |
| `om` (only mask) | false | true: `output=alpha`, the grey matte |
| `ppm` (post-process mask) | false | true: 422 |
| `dc` (decontaminate), `vm` (ViTMatte) | false | true: 422 |
| `bgc` (`r,g,b[,a]`) | none | alpha 255 (3 values: 255): `background=#rrggbb`; 0: none; else 422 |
| `extras` (JSON object) | none | `{}` or none; any key: 422 (a rembg session option) |

Booleans take what FastAPI takes (`true/false`, `1/0`, `yes/no`, `on/off`); a wrong value of
any parameter is a 422 with a detail naming it, as rembg's framework answers. An unknown
parameter is left alone, as rembg leaves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import Unprocessable
from shared.catalogue import model_names
from shared.finishing import OutputOptions
from shared.formats import OutputMode
from shared.settings import Settings

__all__ = ["PARAMETERS", "RemoveOptions", "parse_bgc", "parse_remove_params"]

PARAMETERS = ("model", "a", "af", "ab", "ae", "om", "ppm", "dc", "vm", "bgc", "extras")
"""rembg's `/api/remove` parameters, in its order."""
_TRUE = frozenset({"1", "true", "on", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "off", "no", "n", "f"})


@dataclass(frozen=True)
class RemoveOptions:
    """The matting request a `/api/remove` call makes: one engine, the output and options."""

    model: str
    output: OutputMode = OutputMode.RGBA
    options: OutputOptions = field(default_factory=OutputOptions)


def _bool(raw: Mapping[str, str], name: str) -> bool:
    value = raw.get(name)
    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise Unprocessable(f"{name} must be a boolean (true/false), not {value[:40]!r}")


def _int(raw: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    value = raw.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        n = int(value.strip())
    except ValueError:
        raise Unprocessable(f"{name} must be a whole number, not {value[:40]!r}") from None
    if n < low or (high is not None and n > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Unprocessable(f"{name} must be {span}, not {n}")
    return n


def parse_bgc(value: str) -> tuple[int, int, int, int]:
    """rembg's `bgc`: `r,g,b,a` (or `r,g,b`, alpha 255), each 0–255; 422 otherwise."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise Unprocessable(f"bgc must be 'r,g,b,a' with whole numbers 0-255, not {value[:40]!r}")
    nums = [int(p) for p in parts]
    if any(n > 255 for n in nums):
        raise Unprocessable(f"bgc values must be 0-255, not {value[:40]!r}")
    r, g, b = nums[:3]
    return r, g, b, nums[3] if len(nums) == 4 else 255


def _unsupported(name: str, what: str, why: str) -> Unprocessable:
    return Unprocessable(f"{name}=true ({what}) is not supported by mattepipe: {why}; send "
                         f"{name}=false or leave it out")


def parse_remove_params(settings: Settings, raw: Mapping[str, str]) -> RemoveOptions:
    """The checked options of one `/api/remove` call (`raw`: its query parameters and form
    fields as text, form fields winning), or `Unprocessable` naming the parameter."""
    model = (raw.get("model") or "").strip() or settings.default_model
    known = model_names(settings.models_dir)
    if model not in known:
        raise Unprocessable(f"unknown model {model[:80]!r}; available: {', '.join(known)}")
    if _bool(raw, "a"):
        raise _unsupported("a", "alpha matting", "the engines refine the edge themselves "
                           "(classical, portrait; a model's preset)")
    # rembg's own ranges, checked even though only alpha matting would use them
    _int(raw, "af", 240, 0, 255)
    _int(raw, "ab", 10, 0, 255)
    _int(raw, "ae", 10, 0, None)
    only_mask = _bool(raw, "om")
    if _bool(raw, "ppm"):
        raise _unsupported("ppm", "post-process mask", "the matte is returned as the engine "
                           "made it")
    if _bool(raw, "dc"):
        raise _unsupported("dc", "decontaminate edges", "there is no colour decontamination")
    if _bool(raw, "vm"):
        raise _unsupported("vm", "ViTMatte refinement", "there is no ViTMatte engine")
    extras = (raw.get("extras") or "").strip()
    if extras:
        try:
            parsed = json.loads(extras)
        except ValueError:
            raise Unprocessable("extras must be a JSON object") from None
        if not isinstance(parsed, dict):
            raise Unprocessable("extras must be a JSON object")
        if parsed:
            raise Unprocessable(f"extras {sorted(parsed)[:8]} are not supported: they are rembg "
                                "session options; mattepipe takes none")
    background = None
    bgc = (raw.get("bgc") or "").strip()
    if bgc:
        r, g, b, alpha = parse_bgc(bgc)
        if only_mask:
            raise Unprocessable("bgc has no meaning with om=true (a grey matte)")
        if alpha not in (0, 255):
            raise Unprocessable(f"bgc alpha must be 255 (opaque) or 0 (none), not {alpha}: "
                                "the background is composited as an opaque colour")
        if alpha == 255:
            background = f"#{r:02x}{g:02x}{b:02x}"
    output = OutputMode.ALPHA if only_mask else OutputMode.RGBA
    return RemoveOptions(model, output, OutputOptions(background=background))
