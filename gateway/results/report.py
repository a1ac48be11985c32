"""The job report: report.json, report.csv and the offline gallery index.html, streamed to disk.

Schema decision (report.json, docs/DESIGN.md "Ground truth in an upload"): every item's `metrics` is
one flat dict, `{"sad", "mse", "grad", "conn"}` where ground truth was given plus the gt-free
`coverage`, `uncertain`, `border_alpha` — always for the job's *first* model, so a reader of a
single-model job and of a multi-model job finds the same keys in the same place. A job with
several models adds `metrics_by_model: {model: {...}}` to each item and `by_model` / `ranking` to
the summary. `ReportItem.metrics` is taken as the comparison stage returned it (keyed by model
name); a flat dict is accepted too and filed under the first model.

Timings are durations in seconds, keyed as the gateway names them (e.g. `queued_s`, `matting_s`,
`comparison_s`, `total_s`); they become `timings` in JSON and one CSV column each.

Size decision (README, "The report"): a job may hold a million items, so nothing here keeps
them all. `ReportWriter` takes items a page at a time: each is written at once (a CSV row, one
line of report.json's `items`, one entry of the gallery data) while the summary — counts, means,
the worst ten — is accumulated in constant memory. The summary comes *before* the items in
report.json and index.html, so those two are assembled at the end from their head and the
items' spool file, copied in blocks. The CSV's columns (models, timings) are therefore fixed
up front: the job's model list.

CSV cells written from user text (path, error, output names) that begin with `=`, `+`, `-`,
`@`, a tab or a carriage return get a leading `'` (OWASP, "CSV Injection"), and every text
cell is quoted, so a spreadsheet never runs an uploaded file name as a formula.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.results.gallery import (
    gallery_head,
    gallery_names,
    gallery_row,
    gallery_tail,
    page_parts,
)
from shared.formats import FREE_KEYS, GT_KEYS, Metric

__all__ = [
    "CSV_NAME",
    "FREE_KEYS",
    "GT_KEYS",
    "HTML_NAME",
    "JSON_NAME",
    "REPORT_FILES",
    "WORST_N",
    "Report",
    "ReportItem",
    "ReportWriter",
    "build_report",
    "csv_cell",
]

WORST_N = 10
WORST_BY = Metric.MSE
FAILED_STATES = frozenset({"failed", "permanently_failed"})
JSON_NAME, CSV_NAME, HTML_NAME = "report.json", "report.csv", "index.html"
REPORT_FILES = (JSON_NAME, CSV_NAME, HTML_NAME)
"""The report's three files, by the names they have on disk and at the zip's root."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters a spreadsheet may read as a formula (OWASP, "CSV Injection")."""
COPY_BLOCK = 1 << 20
"""Bytes per read when a spool file is copied into its report file."""


@dataclass
class ReportItem:
    path: str
    """Relative path inside the upload."""
    state: str
    error: str | None = None
    metrics: dict[str, Any] | None = None
    """As the comparison stage returned it: {model: {metric: value}} (a flat dict is accepted)."""
    timings: dict[str, float | None] = field(default_factory=dict)
    matting_output: str | None = None
    """Name inside the zip, e.g. matting_output/a/b.png."""
    compare_output: str | None = None
    """Name inside the zip, e.g. final_results/a/b_compare.jpg."""
    cached: bool = False
    """The cut-out was reused from an identical earlier image, not computed again
    (`gateway.pipeline.result_cache`)."""
    confidence: float | None = None
    """The matting engine's confidence in the cut-out, 0–1 (1: right); None: not matted."""
    fallback: dict[str, Any] | None = None
    """Set when a low-confidence cut-out was redone by FALLBACK_MODEL (issue 16)."""


@dataclass
class Report:
    json_bytes: bytes
    csv_bytes: bytes
    html_bytes: bytes


def _num(v: Any) -> float | None:
    """JSON has no NaN: anything non-finite or non-numeric becomes null."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def _per_model(metrics: Mapping[str, Any] | None, default: str) -> dict[str, dict[str, float]]:
    if not metrics:
        return {}
    if all(isinstance(v, Mapping) for v in metrics.values()):
        nested: Mapping[str, Mapping[str, Any]] = metrics
    else:
        nested = {default: metrics}
    return {
        model: {k: f for k, v in m.items() if (f := _num(v)) is not None}
        for model, m in nested.items()
    }


def csv_cell(text: str | None) -> str:
    """User text as a CSV cell no spreadsheet evaluates: a leading `'` before a formula start."""
    if not text:
        return ""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class _Mean:
    """A running mean: a count and a sum, whatever the number of values."""

    __slots__ = ("n", "total")

    def __init__(self) -> None:
        self.n, self.total = 0, 0.0

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v

    @property
    def value(self) -> float | None:
        return self.total / self.n if self.n else None


class _ModelStats:
    """One model's means and worst ten, accumulated item by item."""

    def __init__(self) -> None:
        self.gt = {k: _Mean() for k in GT_KEYS}
        self.free = {k: _Mean() for k in FREE_KEYS}
        self.with_gt = 0
        self._worst: list[tuple[float, int, dict[str, Any]]] = []
        """A min-heap of (mse, -order, entry): its root is the mildest of the worst kept."""

    def add(self, order: int, item: ReportItem, m: Mapping[str, float]) -> None:
        for k in FREE_KEYS:
            if k in m:
                self.free[k].add(m[k])
        if not all(k in m for k in GT_KEYS):
            return
        self.with_gt += 1
        for k in GT_KEYS:
            self.gt[k].add(m[k])
        key = (m[WORST_BY], -order)
        if len(self._worst) < WORST_N or key > self._worst[0][:2]:
            entry = {"path": item.path, **{k: m[k] for k in GT_KEYS},
                     "compare_output": item.compare_output}
            if len(self._worst) < WORST_N:
                heapq.heappush(self._worst, (*key, entry))
            else:
                heapq.heapreplace(self._worst, (*key, entry))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.gt[k].value for k in GT_KEYS}
        out.update({k: self.free[k].value for k in FREE_KEYS})
        out["with_ground_truth"] = self.with_gt
        # worst first; among equals the earlier item, as a stable sort would have it
        out["worst"] = [e for _, _, e in sorted(self._worst, key=lambda w: (-w[0], -w[1]))]
        return out


def _ranking(by_model: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per gt metric, the models with a mean best (lowest) first; ties keep the job's order."""
    ranking: dict[str, list[str]] = {}
    for k in GT_KEYS:
        scored = [(s[k], i, name) for i, (name, s) in enumerate(by_model.items())
                  if s[k] is not None]
        ranking[k] = [name for _, _, name in sorted(scored)]
    return ranking


def _copy(src: Path, out: IO[bytes]) -> None:
    with src.open("rb") as f:
        shutil.copyfileobj(f, out, COPY_BLOCK)


class ReportWriter:
    """The three report files of one job, written into `folder` a page of items at a time.

    `add()` as often as there are pages, then `finish()`; memory stays that of one page. The
    files appear in `folder` only when complete (each renamed into place); `abort()` (or an
    exception inside `with`) leaves nothing behind.
    """

    def __init__(self, folder: Path, job_id: str, models: Sequence[str],
                 timing_keys: Sequence[str]) -> None:
        self.folder, self.job_id = folder, job_id
        self.models = list(dict.fromkeys(models)) or ["model"]
        self.named = bool(models)
        """False when no model list was given: the one column set carries bare metric names."""
        self.timing_keys = list(timing_keys)
        self.multi = len(self.models) > 1
        self.stats = {m: _ModelStats() for m in self.models}
        self.times = {k: _Mean() for k in self.timing_keys}
        self.counts = {"items": 0, "completed": 0, "failed": 0, "rejected": 0, "cached": 0}
        self.names = gallery_names()
        folder.mkdir(parents=True, exist_ok=True)
        self._spool = Path(tempfile.mkdtemp(prefix=".report-", dir=folder))
        self._json = (self._spool / "items.json").open("w", encoding="utf-8")
        self._gallery = (self._spool / "gallery.json").open("w", encoding="utf-8")
        self._csv_file = (self._spool / CSV_NAME).open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._csv_file, lineterminator="\n",
                               quoting=csv.QUOTE_NONNUMERIC)
        keys = GT_KEYS + FREE_KEYS
        self._cols = [(m, k, k if not self.multi else f"{m}.{k}")
                      for m in self.models for k in keys]
        self._csv.writerow(["path", "state", "error", *self.timing_keys,
                            *(c for _, _, c in self._cols), "matting_output", "compare_output",
                            "cached"])

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def add(self, items: Iterable[ReportItem]) -> None:
        """Write one page of items (in report order) and count them into the summary."""
        primary = self.models[0]
        for r in items:
            order = self.counts["items"]
            self.counts["items"] += 1
            self.counts["completed"] += r.state == "completed"
            self.counts["failed"] += r.state in FAILED_STATES
            self.counts["rejected"] += r.state == "rejected"
            self.counts["cached"] += r.cached
            per = _per_model(r.metrics, primary)
            for name, m in per.items():
                if name in self.stats:
                    self.stats[name].add(order, r, m)
            timings = {k: _num(v) for k, v in r.timings.items()}
            for k, mean in self.times.items():
                if (v := timings.get(k)) is not None:
                    mean.add(v)
            item: dict[str, Any] = {
                "path": r.path, "state": r.state, "error": r.error,
                "metrics": per.get(primary), "timings": timings,
                "matting_output": r.matting_output, "compare_output": r.compare_output,
                "cached": r.cached,
                "confidence": r.confidence,
            }
            if r.fallback is not None:
                item["fallback"] = r.fallback
            if self.multi:
                item["metrics_by_model"] = per
            sep = ",\n" if order else "\n"
            self._json.write(sep + json.dumps(item, ensure_ascii=False, separators=(",", ":"),
                                              allow_nan=False))
            row = gallery_row(item, self.models, self.multi, self.names)
            self._gallery.write(("," if order else "") + row)
            self._csv.writerow([
                csv_cell(r.path), r.state, csv_cell(r.error),
                *(float(f"{v:.6g}") if (v := timings.get(k)) is not None else ""
                  for k in self.timing_keys),
                *(v if (v := per.get(model, {}).get(k)) is not None else ""
                  for model, k, _ in self._cols),
                csv_cell(r.matting_output), csv_cell(r.compare_output), int(r.cached),
            ])

    def summary(self) -> dict[str, Any]:
        by_model = {name: st.summary() for name, st in self.stats.items()}
        first = by_model[self.models[0]]
        summary: dict[str, Any] = {
            **self.counts,
            "with_ground_truth": first["with_ground_truth"],
            "metrics": {k: first[k] for k in GT_KEYS},
            "metrics_free": {k: first[k] for k in FREE_KEYS},
            "worst": first["worst"],
            "timings": {k: m.value for k, m in self.times.items()},
        }
        if self.multi:
            summary["by_model"] = by_model
            summary["ranking"] = _ranking(by_model)
        return summary

    def finish(self) -> None:
        """Assemble report.json and index.html around the spooled items; rename all three
        into the folder."""
        for spool in (self._json, self._gallery, self._csv_file):
            spool.close()
        models = self.models if self.named else []
        summary = self.summary()
        doc_head = {"job_id": self.job_id, "models": models, "summary": summary}
        head = json.dumps(doc_head, indent=1, ensure_ascii=False, allow_nan=False)
        out = self._spool / JSON_NAME
        with out.open("wb") as out_json:
            out_json.write(head[: head.rfind("}")].rstrip().encode())
            out_json.write(b',\n "items": [')
            _copy(self._spool / "items.json", out_json)
            out_json.write(b"\n ]\n}\n")
        before, after = page_parts(self.job_id, models, summary)
        with (self._spool / HTML_NAME).open("wb") as out_html:
            out_html.write(before.encode())
            out_html.write(gallery_head(self.job_id, models, summary, self.names).encode())
            _copy(self._spool / "gallery.json", out_html)
            out_html.write(gallery_tail().encode())
            out_html.write(after.encode())
        for name in REPORT_FILES:
            (self._spool / name).replace(self.folder / name)
        self.abort()

    def abort(self) -> None:
        """Drop the spool folder (and with it any half-written file)."""
        for f in (self._json, self._gallery, self._csv_file):
            f.close()
        shutil.rmtree(self._spool, ignore_errors=True)


def build_report(
    job_id: str, items: Iterable[ReportItem], models: Sequence[str] | None = None
) -> Report:
    """All three report files for a list of items, in memory (tests, small callers): the
    streaming writer into a temporary folder, read back. `models` is the job's model list in
    the user's order (the first one fills the flat `metrics`); without it the order the items
    reveal is used."""
    rows = list(items)
    model_list = list(dict.fromkeys(models or []))
    tkeys: dict[str, None] = {}
    for r in rows:
        tkeys.update(dict.fromkeys(r.timings))
        default = model_list[0] if model_list else "model"
        for name in _per_model(r.metrics, default):
            if name not in model_list:
                model_list.append(name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with ReportWriter(folder, job_id, model_list, list(tkeys)) as w:
            w.add(rows)
            w.finish()
        return Report(*((folder / n).read_bytes() for n in REPORT_FILES))
