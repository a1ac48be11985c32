"""The comparison stage: original + matte(s) (+ ground truth) → JPEG sheet and metrics.

A request names its mattes as `ComparisonParams.mattes = [{model, path}, …]`: one sheet row and
one metrics entry per model, in that order (one entry for a single-model job). `extra.metrics`
is keyed by model name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import orjson

from comparison_worker.engine import Comparison, compare
from comparison_worker.sheet import tile_size
from shared.errors import ObjectMissing
from shared.icc import ColorManagement
from shared.imaging import decode_alpha, decode_image, encode_jpeg
from shared.schemas import ComparisonParams, ComparisonRequest, StageRequest
from shared.settings import Settings
from shared.stages import Stage
from shared.storage import METRICS_SUFFIX, Storage
from shared.worker.stage import BadInput, BatchPolicy, StageOutput, thread_count

__all__ = ["ComparisonItem", "ComparisonStage"]

Alpha = npt.NDArray[np.float32]

_METRICS_JSON = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
"""The metrics file's layout: json.dumps(indent=2)'s, written by orjson (issue 17: the standard
library's encoder falls back to pure Python with `indent`: about 5 % of the comparison worker's CPU
per tiny image). Non-ASCII text is written as UTF-8 rather than `\\u` escapes, a float may
be spelled otherwise (`0.00001` for `1e-05`: the same value); keys that
are `StrEnum` members (the metric names) are written as their values, as json writes them."""


@dataclass
class ComparisonItem:
    rgb: npt.NDArray[np.uint8]
    """The original for the sheet: a large JPEG decoded only as large as its tiles need."""
    mattes: list[tuple[str, Alpha]]
    """(model, alpha at the image's size), in the request's order."""
    gt: Alpha | None
    output: Path | str
    """The sheet's target (checked: `Stage.output_target`): a file on DATA_DIR, a key on S3."""
    metrics_output: Path | str | None
    notes: list[str] = field(default_factory=list)
    confidences: dict[str, float] = field(default_factory=dict)
    """The matting engine's confidence per model, where the gateway knew it (sheet caption)."""
    size: tuple[int, int] | None = None
    """The image's (height, width) when `rgb` is a reduced decode; the mattes have this size."""


def _fit(alpha: Alpha, shape: tuple[int, int]) -> Alpha:
    h, w = shape
    out: Alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return out


class ComparisonStage:
    """CPU work that gains nothing from batching: batches of one, several side by side."""

    name = Stage.COMPARISON
    route = Stage.COMPARISON.route
    request_model = ComparisonRequest

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

    def batch_key(self, req: StageRequest[ComparisonParams]) -> str:
        return "compare"

    def ensure(self, key: str) -> BatchPolicy:
        return BatchPolicy(max_batch_size=1, concurrency=max(1, self.threads))

    def _read_alpha(self, storage: Storage, target: Path | str, rel: str, what: str) -> Alpha:
        try:
            source = storage.read_target(target)  # the file itself on DATA_DIR
        except ObjectMissing as exc:
            raise BadInput(f"{what} not found: {rel}") from exc
        return decode_alpha(source)

    def prepare(self, req: StageRequest[ComparisonParams], storage: Storage) -> ComparisonItem:
        """Every key is checked against the job's areas first (`Stage.output_target`,
        `Stage.input_target`): the sheet and metrics go to final_results/<job_id>/ only, and
        the image, mattes and ground truth come from this job's own, on disk or on S3."""
        p = req.params
        job = req.job_id
        output = Stage.COMPARISON.output_target(storage, job, req.output)
        metrics_output = (Stage.COMPARISON.output_target(storage, job, p.metrics_output,
                                                         METRICS_SUFFIX)
                          if p.metrics_output else None)
        matte_keys = [Stage.MATTING.output_target(storage, job, ref.path) for ref in p.mattes]
        gt_key = Stage.input_target(storage, job, p.gt) if p.gt else None
        source_key = Stage.input_target(storage, job, req.input)
        try:
            source = storage.read_target(source_key)
        except ObjectMissing as exc:
            raise BadInput(f"input not found: {req.input}") from exc
        # The sheet shows the original at tile size only: a large JPEG decodes at a DCT scale
        # that keeps the tile (issue 14, point 2); the mattes are checked at its own size.
        decoded = decode_image(source, self.settings.max_image_pixels, ColorManagement.SRGB,
                               fit=tile_size)
        rgb = decoded.rgb
        shape = decoded.full_hw or (int(rgb.shape[0]), int(rgb.shape[1]))
        notes: list[str] = []
        mattes: list[tuple[str, Alpha]] = []
        for i, (ref, matte_key) in enumerate(zip(p.mattes, matte_keys, strict=True)):
            alpha = self._read_alpha(storage, matte_key, ref.path, f"mattes[{i}].path")
            if alpha.shape != shape:
                notes.append(f"matte of {ref.model} {alpha.shape[1]}x{alpha.shape[0]} resized "
                             "to the image")
                alpha = _fit(alpha, shape)
            mattes.append((ref.model, alpha))
        gt = None
        if p.gt and gt_key is not None:
            gt = self._read_alpha(storage, gt_key, p.gt, "gt")
            if gt.shape != shape:
                notes.append(f"ground truth {gt.shape[1]}x{gt.shape[0]} resized (bilinear) "
                             f"to the image's {shape[1]}x{shape[0]}")
                gt = _fit(gt, shape)
        confidences = {ref.model: ref.confidence for ref in p.mattes
                       if ref.confidence is not None}
        return ComparisonItem(rgb, mattes, gt, output, metrics_output, notes, confidences,
                              decoded.full_hw)

    def run_batch(self, key: str, items: list[ComparisonItem]) -> list[Comparison]:
        return [compare(it.rgb, it.mattes, it.gt, it.confidences, it.size) for it in items]

    def finish(
        self, req: StageRequest[ComparisonParams], item: ComparisonItem, out: Comparison,
        storage: Storage,
    ) -> StageOutput:
        storage.write_target(item.output, encode_jpeg(np.ascontiguousarray(out.sheet)))
        extra: dict[str, Any] = {"metrics": out.metrics, "has_gt": item.gt is not None}
        if item.notes:
            extra["notes"] = item.notes
        if item.metrics_output is not None:
            doc = {
                "task_id": req.task_id,
                "job_id": req.job_id,
                "input": req.input,
                "mattes": [m.model_dump() for m in req.params.mattes],
                "gt": req.params.gt,
                "metrics": out.metrics,
                "notes": item.notes,
            }
            storage.write_target(item.metrics_output, orjson.dumps(doc, option=_METRICS_JSON))
            extra["metrics_output"] = storage.target_name(item.metrics_output)
        return StageOutput(output=req.output, extra=extra)
