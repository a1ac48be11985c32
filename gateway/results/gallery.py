"""index.html: the offline gallery in the result zip.

One self-contained file (inline CSS and JS, no network): the summary is plain HTML, the items
travel as compact JSON in a `<script type="application/json">` tag and are rendered a page at a
time, so 100 000 items cost a few MB of text and only one page of DOM and thumbnails.

The script is gateway/web/gallery.js, the live page's gallery module, inlined byte for byte in
a `<script type="module">` (an inline module needs no server: it works from file:) and followed
by one call, `offlineGallery(data)`. Output names are Python's: each item carries its sheet and
cut-out name, or 1 for the usual name, which the data spells out as a prefix and suffix around
the path's stem (`names`), so the script knows no naming rule of its own.

Stable hooks for tests and users: `#sort` (values `<metric>-asc|desc`, `name-asc|desc`),
`#state`, `#model`, `#q`, `#page-prev`, `#page-next`, `#page-info`, `#count`, `#ranking-box`
(several models), and `#items .item` with `data-path`, `data-state` and `data-<metric>` of the
selected model.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.formats import METRIC_KEYS
from shared.storage import FINAL_RESULTS, MATTING_OUTPUT

__all__ = ["GALLERY_JS", "TEMPLATE", "cutout_name", "gallery_data", "gallery_head",
           "gallery_names", "gallery_row", "gallery_tail", "page_parts", "render_gallery",
           "sheet_name"]

TEMPLATE = Path(__file__).with_name("report_gallery.html")
GALLERY_JS = Path(__file__).resolve().parent.parent / "web" / "gallery.js"
"""The gallery module shared with the live page, inlined into every index.html."""
KEYS = METRIC_KEYS
"""Fallback metric columns, for a doc whose summary does not name them."""
CONFIDENCE = "confidence"
"""The matting engine's confidence (first model), the last value of every item's row: the
gallery offers it as "needs review first" (least confident first)."""
DEFAULT_SORT = "mse"
"""The ground-truth metric the gallery sorts by first (worst first), as the summary's worst ten."""


@lru_cache(maxsize=1)
def _template() -> str:
    return TEMPLATE.read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _script() -> str:
    text = GALLERY_JS.read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise ValueError(f"{GALLERY_JS} cannot be inlined: it holds '</script'")
    return text


def _short(v: Any) -> float | None:
    return float(f"{v:.5g}") if isinstance(v, float) else None


def _stem(path: str) -> str:
    slash = path.rfind("/")
    dot = path.rfind(".")
    return path[:dot] if dot > slash + 1 else path


def sheet_name(path: str) -> str:
    """The comparison sheet's name in the zip (docs/DESIGN.md, "Public API"):
    final_results/<stem>_compare.jpg."""
    return f"{FINAL_RESULTS}/{_stem(path)}_compare.jpg"


def cutout_name(path: str) -> str:
    """The (first model's) cut-out's name in the zip: matting_output/<stem>.png."""
    return f"{MATTING_OUTPUT}/{_stem(path)}.png"


_MARK = "\x00"


def _affixes(name: Callable[[str], str]) -> list[str]:
    """[prefix, suffix] that `name` puts around a path's stem, for the script to apply."""
    prefix, suffix = name(_MARK + ".x").split(_MARK)
    return [prefix, suffix]


def _ref(actual: str | None, path: str, affixes: Sequence[str]) -> str | int:
    """1 when the zip name is the usual one (affixes around the path's stem: the gallery puts
    it together again), 0 when there is none, else the name itself: saves two long strings per
    item."""
    if actual is None:
        return 0
    return 1 if actual == f"{affixes[0]}{_stem(path)}{affixes[1]}" else actual


def gallery_names() -> dict[str, list[str]]:
    """The affixes of the usual sheet and cut-out names (`names` in the data)."""
    return {"sheet": _affixes(sheet_name), "cutout": _affixes(cutout_name)}


def _row(it: Mapping[str, Any], models: Sequence[str], multi: bool,
         names: Mapping[str, Sequence[str]], keys: Sequence[str]) -> list[Any]:
    per = it.get("metrics_by_model") if multi else {models[0]: it.get("metrics")}
    conf = _short(float(c)) if isinstance(c := it.get("confidence"), int | float) else None
    metric_keys = [k for k in keys if k != CONFIDENCE]
    vals: list[list[float | None] | None] = []
    for i, name in enumerate(models):
        m = (per or {}).get(name) or {}
        mine = conf if i == 0 else None  # the engine's confidence is the first model's
        vals.append([*[_short(m.get(k)) for k in metric_keys], mine]
                    if m or mine is not None else None)
    return [
        it["path"],
        it["state"],
        it["error"],
        _ref(it["compare_output"], it["path"], names["sheet"]),
        _ref(it["matting_output"], it["path"], names["cutout"]),
        vals if any(vals) else None,
    ]


def gallery_row(it: Mapping[str, Any], models: Sequence[str], multi: bool,
                names: Mapping[str, Sequence[str]]) -> str:
    """One report.json item as its entry of the embedded data (escaped for the <script>)."""
    return _embed(_row(it, list(models) or ["model"], multi, names, KEYS))


def _data_head(job_id: str, models: Sequence[str], summary: Mapping[str, Any],
               names: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    gt_keys = list(summary.get("metrics") or KEYS[:4])
    free_keys = list(summary.get("metrics_free") or KEYS[4:])
    return {"job_id": job_id, "models": list(models) or ["model"],
            "keys": [*gt_keys, *free_keys, CONFIDENCE], "gt_keys": gt_keys,
            "free_keys": free_keys, "review_key": CONFIDENCE,
            "default_sort": DEFAULT_SORT, "ranking": summary.get("ranking"),
            "names": dict(names)}


def gallery_head(job_id: str, models: Sequence[str], summary: Mapping[str, Any],
                 names: Mapping[str, Sequence[str]]) -> str:
    """The embedded data up to its items: `{..., "items":[` (the rows follow, then
    `gallery_tail()`)."""
    text = _embed({**_data_head(job_id, models, summary, names), "items": []})
    return text[: -len("[]}")] + "["


def gallery_tail() -> str:
    return "]}"


def gallery_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Items as arrays, not objects: [path, state, error, sheet, cut-out, [[values] per model]].

    Metric values keep 5 significant digits: enough to sort, and a third of the text.
    """
    summary: Mapping[str, Any] = doc.get("summary") or {}
    head = _data_head(doc["job_id"], doc["models"], summary, gallery_names())
    multi = len(doc["models"]) > 1
    rows = [_row(it, head["models"], multi, head["names"], head["keys"]) for it in doc["items"]]
    return {**head, "items": rows}


def _embed(data: Any) -> str:
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
    if "ranking" in s:  # several models: gallery.js's rankingList() fills it from the data
        parts.append('<div id="ranking-box"></div>')
    if s["worst"]:
        parts.append('<details id="worst" open><summary>worst ten by mse</summary><ol>' + "".join(
            f'<li><a href="{e(quote(w["compare_output"] or ""))}">{e(w["path"])}</a> '
            f'mse {_fmt(w["mse"])} · sad {_fmt(w["sad"])}</li>' for w in s["worst"])
            + "</ol></details>")
    return "\n".join(parts)


def page_parts(job_id: str, models: Sequence[str], summary: Mapping[str, Any]
               ) -> tuple[str, str]:
    """index.html before and after its embedded data, the summary and script filled in."""
    doc = {"job_id": job_id, "models": list(models), "summary": summary}
    fills = {
        "TITLE": html.escape(f"mattepipe job {job_id}"),
        "SUMMARY": _summary_html(doc),
        "GALLERY_JS": _script(),
    }
    before, after = _template().split("__DATA__", 1)
    # One pass per half, so a user's file name that happens to read "__DATA__" stays a name.
    def fill(part: str) -> str:
        return re.sub(r"__(TITLE|SUMMARY|GALLERY_JS)__", lambda m: fills[m.group(1)], part)

    return fill(before), fill(after)


def render_gallery(doc: Mapping[str, Any]) -> bytes:
    """index.html for a report held in memory (the writer streams the same parts)."""
    before, after = page_parts(doc["job_id"], doc["models"], doc["summary"])
    return (before + _embed(gallery_data(doc)) + after).encode("utf-8")
