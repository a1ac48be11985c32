"""The job report: report.json, report.csv and the offline gallery index.html (first version)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Report", "ReportItem", "build_report"]


@dataclass
class ReportItem:
    path: str
    """Relative path inside the upload."""
    state: str
    error: str | None = None
    metrics: dict[str, Any] | None = None
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


def build_report(job_id: str, items: Iterable[ReportItem]) -> Report:
    rows = list(items)
    summary = {
        "items": len(rows),
        "completed": sum(r.state == "completed" for r in rows),
        "failed": sum(r.state in ("failed", "permanently_failed") for r in rows),
        "rejected": sum(r.state == "rejected" for r in rows),
    }
    doc = {
        "job_id": job_id,
        "summary": summary,
        "items": [
            {"path": r.path, "state": r.state, "error": r.error, "metrics": r.metrics}
            for r in rows
        ],
    }
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "state", "error"])
    for r in rows:
        w.writerow([r.path, r.state, r.error or ""])
    cells = "".join(
        f'<figure><img src="{html.escape(r.compare_output)}" loading="lazy">'
        f"<figcaption>{html.escape(r.path)}</figcaption></figure>"
        for r in rows
        if r.compare_output
    )
    page = f"<!doctype html><meta charset=utf-8><title>{job_id}</title>{cells}"
    return Report(json.dumps(doc, indent=2).encode(), buf.getvalue().encode(), page.encode())
