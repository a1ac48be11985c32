"""The matting stage: decode → engine (batched) → RGBA/alpha PNG at the input's size.

Model against model: a request may name several engines (`MattingParams.models`, the job's
models in the user's order). The image is decoded once and every engine mattes the whole batch
in turn; the batch key is the model list, so all items of a batch share it and each engine
still sees a full batch. The first model writes `req.output` (docs/DESIGN.md's name, "Public
API"), every further one `<x>.<model>.png` (see `shared.storage.model_output_rel`). One request
per image rather than one per (image, model) keeps the gateway's one-task-one-answer
bookkeeping and decodes once.

Confidence and fallback (issue 16): every matte leaves with a confidence in [0, 1] — the
engine's own (`Matte.confidence`, the weight-free engine scores itself) or one derived from
the matte (`output_confidence`). When FALLBACK_MODEL is set, an engine that `falls_back`
hands the images it scored under FALLBACK_BELOW to that model, and the answer's
`extra.fallback` says so. A fallback model that fails leaves the first answer in place, with
the reason in `extra.fallback.error`: a worse cut-out beats none.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from matting_worker.cutout import encode_cutout
from matting_worker.engines.base import Engine, Matte, RGBImage
from matting_worker.engines.confidence import output_confidence
from matting_worker.engines.pool import EnginePool
from matting_worker.engines.registry import UnknownModel, create_engine
from matting_worker.finishing import finished_cutout
from shared.errors import ObjectMissing
from shared.finishing import OutputOptions
from shared.formats import OUTPUT_MODES, OutputMode
from shared.imaging import DecodedImage, decode_image, encode_png_alpha
from shared.model_fetch import ZooSource
from shared.schemas import MODEL_SEP, MattingParams, MattingRequest, StageRequest
from shared.settings import Settings
from shared.stages import Stage
from shared.storage import PNG_SUFFIX, Storage, model_output_rel
from shared.worker.stage import BadInput, BatchPolicy, StageFailure, StageOutput

__all__ = ["MattingItem", "MattingStage", "request_models"]

KEY_SEP = MODEL_SEP
"""Joins the model list into a batch key (`MattingParams` refuses a comma inside a name)."""


@dataclass
class MattingItem:
    rgb: RGBImage
    outputs: list[tuple[str, Path | str, Path | str | None]]
    """Per model, in the request's order: (model, RGBA-or-alpha target, alpha target for
    `both`): checked files on DATA_DIR, keys on S3 (`Stage.output_target`)."""
    mode: OutputMode
    image: DecodedImage | None = None
    """The decoded input with its profile and 16-bit data (`rgb` is `image.rgb`)."""
    options: OutputOptions = field(default_factory=OutputOptions)
    """The job's output options (`shared.finishing`): applied to the cut-out in `finish`."""


def request_models(params: MattingParams, default: str) -> list[str]:
    """The engines a request names (checked by `MattingParams`), or the worker's default."""
    return list(params.models) if params.models is not None else [default]


class MattingStage:
    """Loads the default engine at start, others on first use; at most MAX_LOADED_MODELS stay
    loaded (`matting_worker.engines.pool`), and a changed model file is loaded again."""

    name = Stage.MATTING
    route = Stage.MATTING.route
    request_model = MattingRequest

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.default_model = settings.default_model
        self.zoo = ZooSource.from_settings(settings)
        self.pool = EnginePool(self._create, settings.max_loaded_models)

    def _create(self, name: str) -> Engine:
        """A new engine; a missing zoo model is downloaded (MODEL_DOWNLOAD=1) or refused with
        how to get it. Unknown and missing models are the request's fault (400)."""
        try:
            return create_engine(name, self.settings.models_dir, self.zoo)
        except UnknownModel as exc:
            raise BadInput(str(exc.args[0] if exc.args else exc)) from exc

    @property
    def engines(self) -> dict[str, Engine]:
        """The engines loaded now, by name."""
        return self.pool.loaded()

    def engine(self, name: str) -> Engine:
        return self.pool.engine(name)

    def load(self) -> None:
        self.engine(self.default_model)
        if self.settings.fallback_model:
            # A misnamed fallback should stop the worker at start, not fail images later.
            self.engine(self.settings.fallback_model)

    def _with_fallback(self, engine: Engine, rgbs: list[RGBImage], mattes: list[Matte]
                       ) -> list[Matte]:
        """Every matte with a confidence; those of a `falls_back` engine under FALLBACK_BELOW
        redone by FALLBACK_MODEL (one batch of just those images)."""
        out = [m if m.confidence is not None or not engine.scored
               else replace(m, confidence=output_confidence(m.alpha)) for m in mattes]
        target = self.settings.fallback_model
        if not target or not engine.falls_back or target == engine.name:
            return out
        low = [i for i, m in enumerate(out)
               if m.confidence is not None and m.confidence < self.settings.fallback_below]
        if not low:
            return out
        note = {"from": engine.name, "model": target, "below": self.settings.fallback_below}
        try:
            other = self.engine(target)
            step = self._batch_size(other)  # keep to the fallback's own batch limit
            redo = [m for j in range(0, len(low), step)
                    for m in other.predict([rgbs[i] for i in low[j:j + step]])]
            if len(redo) != len(low):
                raise StageFailure(f"fallback {target!r} returned {len(redo)} mattes for "
                                   f"{len(low)} images", status=500, retryable=False)
        except Exception as exc:  # the first answer stands; the report says why
            for i in low:
                out[i] = replace(out[i], fallback={**note, "confidence": out[i].confidence,
                                                   "error": str(exc)[:500]})
            return out
        for i, m in zip(low, redo, strict=True):
            conf = m.confidence if m.confidence is not None else output_confidence(m.alpha)
            out[i] = replace(m, confidence=conf, route=m.route or target,
                             fallback={**note, "confidence": out[i].confidence})
        return out

    def models(self) -> dict[str, Any]:
        """`GET /models` on the worker: what is loaded now, least recently used first."""
        return self.pool.status()

    def reload_models(self, names: list[str] | None) -> dict[str, Any]:
        """`POST /models/reload`: load `names` (default: all loaded) again from their files."""
        return self.pool.reload(names)

    def _batch_size(self, engine: Engine) -> int:
        return max(1, min(self.settings.max_batch_size, engine.max_batch_size))

    def capacity(self) -> int:
        """One batch running and one filling up."""
        engine = self.pool.get(self.default_model)
        return 2 * (self._batch_size(engine) if engine else self.settings.max_batch_size)

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.default_model,
            "engines": self.pool.infos(),
            "max_loaded_models": self.pool.max_loaded,
            "output_modes": list(OUTPUT_MODES),
        }

    def batch_key(self, req: StageRequest[MattingParams]) -> str:
        return KEY_SEP.join(request_models(req.params, self.default_model))

    def ensure(self, key: str) -> BatchPolicy:
        """Load every engine of the key; a batch is as big as the smallest engine allows."""
        with self.pool.using(key.split(KEY_SEP)) as engines:  # all at once: none evicts another
            size = min(self._batch_size(e) for e in engines.values())
        return BatchPolicy(size, 1, self.settings.max_batch_delay_ms)

    def prepare(self, req: StageRequest[MattingParams], storage: Storage) -> MattingItem:
        mode = req.params.output
        options = req.params.options
        if not req.output.lower().endswith(options.suffix):
            raise BadInput(f"output must be a {options.suffix} path, not {req.output!r}")
        source_target = Stage.input_target(storage, req.job_id, req.input)

        def target(rel: str, suffix: str) -> Path | str:  # only matting_output/<job_id>/….<suffix>
            return Stage.MATTING.output_target(storage, req.job_id, rel, suffix)

        outputs = []
        keep_alpha = mode == OutputMode.BOTH or options.keeps_matte
        for i, model in enumerate(request_models(req.params, self.default_model)):
            out = target(model_output_rel(req.output, model, i), options.suffix)
            alpha = (target(model_output_rel(req.output, model, i, alpha=True), PNG_SUFFIX)
                     if keep_alpha else None)
            outputs.append((model, out, alpha))
        paths = [p for _, out, alpha in outputs for p in (out, alpha) if p is not None]
        if len(set(paths)) != len(paths):  # e.g. a second model called "alpha" with `both`
            raise BadInput("two outputs of this request would have the same name: "
                           f"{[m for m, _, _ in outputs]} with output={mode}")
        try:
            source = storage.read_target(source_target)  # the file itself on DATA_DIR
        except ObjectMissing as exc:
            raise BadInput(f"input not found: {req.input}") from exc
        image = decode_image(source, self.settings.max_image_pixels,
                             self.settings.color_management)
        return MattingItem(rgb=image.rgb, outputs=outputs, mode=mode, image=image,
                           options=options)

    def run_batch(self, key: str, items: list[MattingItem]) -> list[list[Matte]]:
        """Per item, one matte per model of the key (each engine runs the whole batch)."""
        per_item: list[list[Matte]] = [[] for _ in items]
        names = key.split(KEY_SEP)
        with self.pool.using(names) as engines:  # loaded again if evicted or its file changed
            self._run_engines(names, engines, items, per_item)
        return per_item

    def _run_engines(self, names: list[str], engines: dict[str, Engine],
                     items: list[MattingItem], per_item: list[list[Matte]]) -> None:
        for name in names:
            engine = engines[name]
            rgbs = [it.rgb for it in items]
            mattes = engine.predict(rgbs)
            if len(mattes) != len(items):
                raise StageFailure(f"engine {name!r} returned {len(mattes)} mattes for "
                                   f"{len(items)} images", status=500, retryable=False)
            mattes = self._with_fallback(engine, rgbs, mattes)
            for it, m, acc in zip(items, mattes, per_item, strict=True):
                h, w = it.rgb.shape[:2]
                if m.alpha.shape != (h, w) or (
                    m.foreground is not None and m.foreground.shape != it.rgb.shape
                ):
                    raise StageFailure(
                        f"engine {name!r} returned a matte of shape {m.alpha.shape} for a "
                        f"{w}x{h} image", status=500, retryable=False,
                    )
                acc.append(m)

    def finish(
        self, req: StageRequest[MattingParams], item: MattingItem, out: list[Matte],
        storage: Storage,
    ) -> StageOutput:
        """Write every model's files; `extra.outputs` maps model → its main output when the
        request named several models."""
        extra: dict[str, Any] = {
            "engine": item.outputs[0][0],
            "width": int(item.rgb.shape[1]),
            "height": int(item.rgb.shape[0]),
        }
        written: dict[str, str] = {}
        alphas: dict[str, str] = {}
        for (model, key, alpha_key), matte in zip(item.outputs, out, strict=True):
            if not item.options.is_default:
                data = finished_cutout(item.rgb, matte, item.mode, item.options)
            elif item.mode == OutputMode.ALPHA:
                data = encode_png_alpha(matte.alpha)
            else:
                data = encode_cutout(item.image or DecodedImage(item.rgb), matte.alpha,
                                     matte.foreground)
            storage.write_target(key, data)  # local: temp file + rename, as before
            written[model] = storage.target_name(key)
            if alpha_key is not None:
                storage.write_target(alpha_key, encode_png_alpha(matte.alpha))
                alphas[model] = storage.target_name(alpha_key)
        first = item.outputs[0][0]
        lead = out[0]
        if lead.confidence is not None:
            extra["confidence"] = round(float(lead.confidence), 4)
        if lead.route:
            extra["route"] = lead.route
        if lead.fallback is not None:
            extra["fallback"] = lead.fallback
        if len(out) > 1:
            extra["confidences"] = {m: (round(float(x.confidence), 4)
                                        if x.confidence is not None else None)
                                    for (m, _, _), x in zip(item.outputs, out, strict=True)}
        if first in alphas:
            extra["alpha_output"] = alphas[first]
        if len(item.outputs) > 1:
            extra["engines"] = list(written)
            extra["outputs"] = written
            if alphas:
                extra["alpha_outputs"] = alphas
        return StageOutput(output=req.output, extra=extra)
