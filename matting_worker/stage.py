"""The matting stage: decode → engine (batched) → RGBA/alpha PNG at the input's size."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.imaging import decode_rgb, encode_png_alpha, encode_png_rgba
from shared.schemas import StageRequest
from shared.settings import Settings
from shared.storage import Storage, atomic_write_bytes
from shared.worker import BadInput, BatchPolicy, StageFailure, StageOutput

from .engines.base import Engine, Matte, RGBImage
from .engines.registry import UnknownModel, create_engine

__all__ = ["OUTPUT_MODES", "MattingItem", "MattingStage"]

OUTPUT_MODES = ("rgba", "alpha", "both")


@dataclass
class MattingItem:
    rgb: RGBImage
    output: Path
    alpha_output: Path | None
    mode: str


class MattingStage:
    """Loads the default engine at start; other engines on first use, then kept."""

    name = "matting"
    route = "/matting"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.default_model = settings.default_model
        self.engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, name: str) -> Engine:
        with self._lock:
            engine = self.engines.get(name)
            if engine is None:
                try:
                    engine = create_engine(name, self.settings.models_dir)
                except UnknownModel as exc:
                    raise BadInput(str(exc.args[0] if exc.args else exc)) from exc
                engine.load()
                self.engines[name] = engine
            return engine

    def load(self) -> None:
        self.engine(self.default_model)

    def _batch_size(self, engine: Engine) -> int:
        return max(1, min(self.settings.max_batch_size, engine.max_batch_size))

    def capacity(self) -> int:
        """One batch running and one filling up."""
        engine = self.engines.get(self.default_model)
        return 2 * (self._batch_size(engine) if engine else self.settings.max_batch_size)

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.default_model,
            "engines": {name: e.info() for name, e in self.engines.items()},
            "output_modes": list(OUTPUT_MODES),
        }

    def batch_key(self, req: StageRequest) -> str:
        model = req.params.get("model") or self.default_model
        if not isinstance(model, str):
            raise BadInput("params.model must be an engine name")
        return model

    def ensure(self, key: str) -> BatchPolicy:
        engine = self.engine(key)
        return BatchPolicy(self._batch_size(engine), 1, self.settings.max_batch_delay_ms)

    def prepare(self, req: StageRequest, storage: Storage) -> MattingItem:
        mode = req.params.get("output") or "rgba"
        if mode not in OUTPUT_MODES:
            raise BadInput(f"params.output must be one of {', '.join(OUTPUT_MODES)}, not {mode!r}")
        if not req.output.lower().endswith(".png"):
            raise BadInput(f"output must be a .png path, not {req.output!r}")
        source = storage.resolve(req.input)
        output = storage.resolve(req.output)
        alpha_output = None
        if mode == "both":
            alpha_output = storage.resolve(req.output[: -len(".png")] + ".alpha.png")
        if not source.is_file():
            raise BadInput(f"input not found: {req.input}")
        rgb = decode_rgb(source, self.settings.max_image_pixels)
        return MattingItem(rgb=rgb, output=output, alpha_output=alpha_output, mode=mode)

    def run_batch(self, key: str, items: list[MattingItem]) -> list[Matte]:
        mattes = self.engines[key].predict([it.rgb for it in items])
        for it, m in zip(items, mattes, strict=False):
            h, w = it.rgb.shape[:2]
            if m.alpha.shape != (h, w) or (
                m.foreground is not None and m.foreground.shape != it.rgb.shape
            ):
                raise StageFailure(
                    f"engine {key!r} returned a matte of shape {m.alpha.shape} for a {w}x{h} "
                    "image", status=500, retryable=False,
                )
        return mattes

    def finish(
        self, req: StageRequest, item: MattingItem, out: Matte, storage: Storage
    ) -> StageOutput:
        if item.mode == "alpha":
            atomic_write_bytes(item.output, encode_png_alpha(out.alpha))
        else:
            atomic_write_bytes(item.output, encode_png_rgba(item.rgb, out.alpha, out.foreground))
        extra: dict[str, Any] = {
            "engine": self.batch_key(req),
            "width": int(item.rgb.shape[1]),
            "height": int(item.rgb.shape[0]),
        }
        if item.alpha_output is not None:
            atomic_write_bytes(item.alpha_output, encode_png_alpha(out.alpha))
            extra["alpha_output"] = storage.relative(item.alpha_output)
        return StageOutput(output=req.output, extra=extra)
