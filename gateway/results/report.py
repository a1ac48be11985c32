"""The job report: report.json, report.csv and the offline gallery index.html.

Schema decision (report.json, docs/DESIGN.md "Ground truth in an upload"): every item's `metrics` is
one flat dict, `{"sad", "mse", "grad", "conn"}` where ground truth was given plus the gt-free
`coverage`, `uncertain`, `border_alpha` — always for the job's *first* model, so a reader of a
single-model job and of a multi-model job finds the same keys in the same place. A job with
several models adds `metrics_by_model: {model: {...}}` to each item and `by_model` / `ranking` to
the summary. `ReportItem.metrics` is taken as the comparison stage returned it (keyed by model
name); a flat dict is accepted too and filed under the first model.

Timings are durations in seconds, keyed as the gateway names them (e.g. `queued_s`, `matting_s`,
`comparison_s`, `total_s`); they become `timings` in JSON and one CSV column each.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.results.gallery import render_gallery
from shared.formats import FREE_KEYS, GT_KEYS, Metric

__all__ = ["FREE_KEYS", "GT_KEYS", "WORST_N", "Report", "ReportItem", "build_report"]

WORST_N = 10
WORST_BY = Metric.MSE
PRETTY_JSON_MAX_ITEMS = 2000
FAILED_STATES = frozenset({"failed", "permanently_failed"})


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


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _model_summary(
    rows: Sequence[ReportItem], per: Sequence[dict[str, dict[str, float]]], model: str
) -> dict[str, Any]:
    scored = [(r, m[model]) for r, m in zip(rows, per, strict=True) if model in m]
    with_gt = [(r, m) for r, m in scored if all(k in m for k in GT_KEYS)]
    out: dict[str, Any] = {k: _mean([m[k] for _, m in with_gt]) for k in GT_KEYS}
    out.update({k: _mean([m[k] for _, m in scored if k in m]) for k in FREE_KEYS})
    out["with_ground_truth"] = len(with_gt)
    worst = sorted(with_gt, key=lambda rm: rm[1][WORST_BY], reverse=True)[:WORST_N]
    out["worst"] = [
        {"path": r.path, **{k: m[k] for k in GT_KEYS}, "compare_output": r.compare_output}
        for r, m in worst
    ]
    return out


def _ranking(by_model: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Per gt metric, the models with a mean best (lowest) first; ties keep the job's order."""
    ranking: dict[str, list[str]] = {}
    for k in GT_KEYS:
        scored = [(s[k], i, name) for i, (name, s) in enumerate(by_model.items())
                  if s[k] is not None]
        ranking[k] = [name for _, _, name in sorted(scored)]
    return ranking


def _timing_keys(rows: Sequence[ReportItem]) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.timings))
    return list(keys)


def _build_doc(
    job_id: str, rows: Sequence[ReportItem], models: list[str]
) -> tuple[dict[str, Any], list[dict[str, dict[str, float]]]]:
    default = models[0] if models else "model"
    per = [_per_model(r.metrics, default) for r in rows]
    for m in per:
        models.extend(name for name in m if name not in models)
    primary = models[0] if models else default
    by_model = {name: _model_summary(rows, per, name) for name in models}
    first = by_model.get(primary) or _model_summary(rows, per, primary)
    tkeys = _timing_keys(rows)
    summary: dict[str, Any] = {
        "items": len(rows),
        "completed": sum(r.state == "completed" for r in rows),
        "failed": sum(r.state in FAILED_STATES for r in rows),
        "rejected": sum(r.state == "rejected" for r in rows),
        "with_ground_truth": first["with_ground_truth"],
        "metrics": {k: first[k] for k in GT_KEYS},
        "metrics_free": {k: first[k] for k in FREE_KEYS},
        "worst": first["worst"],
        "timings": {
            k: _mean([v for r in rows if (v := _num(r.timings.get(k))) is not None]) for k in tkeys
        },
    }
    if len(models) > 1:
        summary["by_model"] = by_model
        summary["ranking"] = _ranking(by_model)
    items: list[dict[str, Any]] = []
    for r, m in zip(rows, per, strict=True):
        item: dict[str, Any] = {
            "path": r.path,
            "state": r.state,
            "error": r.error,
            "metrics": m.get(primary),
            "timings": {k: _num(v) for k, v in r.timings.items()},
            "matting_output": r.matting_output,
            "compare_output": r.compare_output,
        }
        if len(models) > 1:
            item["metrics_by_model"] = m
        items.append(item)
    doc = {"job_id": job_id, "models": models, "summary": summary, "items": items}
    return doc, per


def _csv(rows: Sequence[ReportItem], per: Sequence[dict[str, dict[str, float]]],
         models: Sequence[str]) -> bytes:
    tkeys = _timing_keys(rows)
    keys = GT_KEYS + FREE_KEYS
    cols = [(m, k, k if len(models) == 1 else f"{m}.{k}") for m in models for k in keys]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "state", "error", *tkeys, *(c for _, _, c in cols),
                "matting_output", "compare_output"])
    for r, m in zip(rows, per, strict=True):
        t = [(f"{v:.6g}" if (v := _num(r.timings.get(k))) is not None else "") for k in tkeys]
        vals = [(repr(v) if (v := m.get(model, {}).get(k)) is not None else "")
                for model, k, _ in cols]
        w.writerow([r.path, r.state, r.error or "", *t, *vals,
                    r.matting_output or "", r.compare_output or ""])
    return buf.getvalue().encode("utf-8")


def build_report(
    job_id: str, items: Iterable[ReportItem], models: Sequence[str] | None = None
) -> Report:
    """All three report files for one job; models is the job's model list in the user's order
    (the first one fills the flat `metrics`); without it the order the items reveal is used."""
    rows = list(items)
    model_list = list(dict.fromkeys(models or []))
    doc, per = _build_doc(job_id, rows, model_list)
    # Indented JSON goes through the pure-Python encoder (seconds for 100 000 items, and half
    # the size again); big jobs get the compact form.
    indent = 1 if len(rows) <= PRETTY_JSON_MAX_ITEMS else None
    separators = None if indent else (",", ":")
    text = json.dumps(doc, indent=indent, separators=separators, ensure_ascii=False,
                      allow_nan=False)
    json_bytes = text.encode("utf-8")
    csv_bytes = _csv(rows, per, model_list)
    return Report(json_bytes, csv_bytes, render_gallery(doc))
