"""index.html: the offline gallery in the result zip.

One self-contained file (inline CSS and JS, no network): the summary is plain HTML, the items
travel as compact JSON in a `<script type="application/json">` tag and are rendered a page at a
time, so 100 000 items cost a few MB of text and only one page of DOM and thumbnails.

Stable hooks for tests and users: `#sort` (values `<metric>-asc|desc`, `name-asc|desc`),
`#state`, `#model`, `#q`, `#page-prev`, `#page-next`, `#page-info`, `#count`, and
`#items .item` with `data-path`, `data-state` and `data-<metric>` of the selected model.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.formats import METRIC_KEYS

__all__ = ["TEMPLATE", "gallery_data", "render_gallery"]

TEMPLATE = Path(__file__).with_name("report_gallery.html")
KEYS = METRIC_KEYS


@lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


def _short(v: Any) -> float | None:
    return float(f"{v:.5g}") if isinstance(v, float) else None


def _stem(path: str) -> str:
    slash = path.rfind("/")
    dot = path.rfind(".")
    return path[:dot] if dot > slash + 1 else path


def _ref(actual: str | None, conventional: str) -> str | int:
    """1 when the zip name is the one DESIGN.md derives from the path (the gallery derives it
    again), 0 when there is none, else the name itself: saves two long strings per item."""
    if actual is None:
        return 0
    return 1 if actual == conventional else actual


def gallery_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Items as arrays, not objects: [path, state, error, sheet, cut-out, [[values] per model]].

    Metric values keep 5 significant digits: enough to sort, and a third of the text.
    """
    models: list[str] = list(doc["models"]) or ["model"]
    multi = len(doc["models"]) > 1
    rows = []
    for it in doc["items"]:
        per = it.get("metrics_by_model") if multi else {models[0]: it.get("metrics")}
        vals = [
            [_short(m.get(k)) for k in KEYS] if (m := (per or {}).get(name)) else None
            for name in models
        ]
        stem = _stem(it["path"])
        rows.append([
            it["path"],
            it["state"],
            it["error"],
            _ref(it["compare_output"], f"final_results/{stem}_compare.jpg"),
            _ref(it["matting_output"], f"matting_output/{stem}.png"),
            vals if any(vals) else None,
        ])
    return {"job_id": doc["job_id"], "models": models, "keys": list(KEYS), "items": rows}


def _embed(data: Mapping[str, Any]) -> str:
    """JSON that cannot close its <script> tag: <, > and & only ever appear as \\u escapes."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4g}"


def _summary_html(doc: Mapping[str, Any]) -> str:
    s = doc["summary"]
    e = html.escape
    parts = [
        '<dl class="counts">'
        + "".join(f"<div><dt>{k}</dt><dd>{s[k]}</dd></div>"
                  for k in ("items", "completed", "failed", "rejected", "with_ground_truth"))
        + "</dl>"
    ]
    models: Sequence[str] = doc["models"]
    by_model: Mapping[str, Any] = s.get("by_model") or (
        {models[0]: {**s["metrics"], **s["metrics_free"]}} if models else {}
    )
    if by_model:
        head = "".join(f"<th>{k}</th>" for k in KEYS)
        body = "".join(
            f"<tr><th>{e(name)}</th>" + "".join(f"<td>{_fmt(m.get(k))}</td>" for k in KEYS)
            + "</tr>"
            for name, m in by_model.items()
        )
        parts.append(f'<table id="means"><caption>means per model</caption><tr><th></th>{head}'
                     f"</tr>{body}</table>")
    if s.get("ranking"):
        parts.append('<ol id="ranking">' + "".join(
            f"<li><b>{k}</b>: {' &lt; '.join(e(n) for n in names)}</li>"
            for k, names in s["ranking"].items()) + "</ol>")
    if s["worst"]:
        parts.append('<details id="worst" open><summary>worst ten by mse</summary><ol>' + "".join(
            f'<li><a href="{e(quote(w["compare_output"] or ""))}">{e(w["path"])}</a> '
            f'mse {_fmt(w["mse"])} · sad {_fmt(w["sad"])}</li>' for w in s["worst"])
            + "</ol></details>")
    return "\n".join(parts)


def render_gallery(doc: Mapping[str, Any]) -> bytes:
    fills = {
        "TITLE": html.escape(f"mattepipe job {doc['job_id']}"),
        "SUMMARY": _summary_html(doc),
        "DATA": _embed(gallery_data(doc)),
    }
    # One pass, so a user's file name that happens to read "__DATA__" stays a file name.
    page = re.sub(r"__(TITLE|SUMMARY|DATA)__", lambda m: fills[m.group(1)], _template())
    return page.encode("utf-8")
