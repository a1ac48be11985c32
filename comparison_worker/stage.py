"""The comparison stage: original + matte(s) (+ ground truth) → JPEG sheet and metrics.

A request names its mattes either as `params.mattes = [{"model", "path"}, …]` (model against
model: one sheet row and one metrics entry per model, in that order) or, for one model, as
`params.matte` + `params.model`. `extra.metrics` is keyed by model name either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from comparison_worker.engine import Comparison, compare
from shared.imaging import decode_alpha, decode_rgb, encode_jpeg
from shared.schemas import StageRequest
from shared.settings import Settings
from shared.storage import Storage, atomic_write_bytes
from shared.worker.server import BadInput, BatchPolicy, StageOutput, thread_count

__all__ = ["ComparisonItem", "ComparisonStage"]

Alpha = npt.NDArray[np.float32]


@dataclass
class ComparisonItem:
    rgb: npt.NDArray[np.uint8]
    mattes: list[tuple[str, Alpha]]
    """(model, alpha at the image's size), in the request's order."""
    gt: Alpha | None
    output: Path
    metrics_output: Path | None
    notes: list[str] = field(default_factory=list)


def _fit(alpha: Alpha, shape: tuple[int, int]) -> Alpha:
    h, w = shape
    out: Alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return out


class ComparisonStage:
    """CPU work that gains nothing from batching: batches of one, several side by side."""

    name = "comparison"
    route = "/compare"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.threads = thread_count(settings)

    def load(self) -> None:
        # A tiny run proves the renderer works before /health says ok.
        rgb = np.zeros((8, 8, 3), np.uint8)
        alpha = np.ones((8, 8), np.float32)
        compare(rgb, [("check", alpha)], alpha)

    def capacity(self) -> int:
        return max(4, 2 * self.threads)  # decode and encode overlap the renders

    def info(self) -> dict[str, Any]:
        return {"engine": "compare", "concurrency": max(1, self.threads)}

    def batch_key(self, req: StageRequest) -> str:
        return "compare"

    def ensure(self, key: str) -> BatchPolicy:
        return BatchPolicy(max_batch_size=1, concurrency=max(1, self.threads))

    def _read_alpha(self, storage: Storage, rel: object, what: str) -> Alpha:
        if not isinstance(rel, str) or not rel:
            raise BadInput(f"params.{what} must be a DATA_DIR-relative path")
        path = storage.resolve(rel)
        if not path.is_file():
            raise BadInput(f"{what} not found: {rel}")
        return decode_alpha(path)

    def _matte_refs(self, p: dict[str, Any]) -> list[tuple[str, object]]:
        """(model, path) per matte, from `mattes` or from `matte` + `model`; checked."""
        if p.get("mattes") is None:
            model = p.get("model") or self.settings.default_model
            if not isinstance(model, str):
                raise BadInput("params.model must be a string")
            return [(model, p.get("matte"))]
        raw = p["mattes"]
        if not isinstance(raw, list) or not raw:
            raise BadInput("params.mattes must be a non-empty list of {model, path}")
        refs: list[tuple[str, object]] = []
        for entry in raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) \
                    or not entry["model"]:
                raise BadInput(f"params.mattes: {entry!r} is not {{model, path}}")
            refs.append((entry["model"], entry.get("path")))
        names = [m for m, _ in refs]
        if len(set(names)) != len(names):
            raise BadInput(f"params.mattes names a model twice: {names}")
        return refs

    def prepare(self, req: StageRequest, storage: Storage) -> ComparisonItem:
        p = req.params
        refs = self._matte_refs(p)
        output = storage.resolve(req.output)
        metrics_rel = p.get("metrics_output")
        if metrics_rel is not None and not isinstance(metrics_rel, str):
            raise BadInput("params.metrics_output must be a DATA_DIR-relative path")
        metrics_output = storage.resolve(metrics_rel) if metrics_rel else None
        source = storage.resolve(req.input)
        if not source.is_file():
            raise BadInput(f"input not found: {req.input}")
        rgb = decode_rgb(source, self.settings.max_image_pixels)
        shape = (int(rgb.shape[0]), int(rgb.shape[1]))
        notes: list[str] = []
        mattes: list[tuple[str, Alpha]] = []
        for i, (model, rel) in enumerate(refs):
            what = f"mattes[{i}].path" if p.get("mattes") is not None else "matte"
            alpha = self._read_alpha(storage, rel, what)
            if alpha.shape != shape:
                notes.append(f"matte of {model} {alpha.shape[1]}x{alpha.shape[0]} resized to "
                             "the image")
                alpha = _fit(alpha, shape)
            mattes.append((model, alpha))
        gt = None
        if p.get("gt"):
            gt = self._read_alpha(storage, p.get("gt"), "gt")
            if gt.shape != shape:
                notes.append(f"ground truth {gt.shape[1]}x{gt.shape[0]} resized (bilinear) "
                             f"to the image's {shape[1]}x{shape[0]}")
                gt = _fit(gt, shape)
        return ComparisonItem(rgb, mattes, gt, output, metrics_output, notes)

    def run_batch(self, key: str, items: list[ComparisonItem]) -> list[Comparison]:
        return [compare(it.rgb, it.mattes, it.gt) for it in items]

    def finish(
        self, req: StageRequest, item: ComparisonItem, out: Comparison, storage: Storage
    ) -> StageOutput:
        atomic_write_bytes(item.output, encode_jpeg(np.ascontiguousarray(out.sheet)))
        extra: dict[str, Any] = {"metrics": out.metrics, "has_gt": item.gt is not None}
        if item.notes:
            extra["notes"] = item.notes
        if item.metrics_output is not None:
            doc = {
                "task_id": req.task_id,
                "job_id": req.job_id,
                "input": req.input,
                "matte": req.params.get("matte"),
                "mattes": req.params.get("mattes"),
                "gt": req.params.get("gt"),
                "metrics": out.metrics,
                "notes": item.notes,
            }
            atomic_write_bytes(item.metrics_output, json.dumps(doc, indent=2).encode())
            extra["metrics_output"] = storage.relative(item.metrics_output)
        return StageOutput(output=req.output, extra=extra)
