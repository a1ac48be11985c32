"""report.json / report.csv / index.html built from report items."""

import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.results.gallery import gallery_data
from gateway.results.report import WORST_N, ReportItem, build_report


def gt_m(mse: float, sad: float = 1.0) -> dict[str, float]:
    return {"sad": sad, "mse": mse, "grad": 2 * sad, "conn": 3 * sad,
            "coverage": 0.25, "uncertain": 0.05, "border_alpha": 0.0}


FREE = {"coverage": 0.5, "uncertain": 0.1, "border_alpha": 0.2}


def items_one_model() -> list[ReportItem]:
    out = []
    for i in range(14):  # 14 scored, so the worst ten really are a selection
        out.append(ReportItem(
            path=f"set/a{i:02d}.jpg", state="completed",
            metrics={"classical": gt_m(mse=i / 100, sad=float(i))},
            timings={"queued_s": 1.0, "matting_s": 0.25 * i, "comparison_s": 0.5},
            matting_output=f"matting_output/set/a{i:02d}.png",
            compare_output=f"final_results/set/a{i:02d}_compare.jpg",
        ))
    out.append(ReportItem(path="set/nogt.png", state="completed", metrics={"classical": FREE},
                          compare_output="final_results/set/nogt_compare.jpg"))
    out.append(ReportItem(path="bad.jpg", state="rejected", error="not a recognised image file"))
    out.append(ReportItem(path="x/y.jpg", state="permanently_failed", error="worker died"))
    return out


def test_json_schema_means_and_worst_ten() -> None:
    rows = items_one_model()
    doc = json.loads(build_report("job-7", rows, ["classical"]).json_bytes)
    assert doc["job_id"] == "job-7"
    s = doc["summary"]
    assert (s["items"], s["completed"], s["failed"], s["rejected"]) == (17, 15, 1, 1)
    assert set(s["metrics"]) == {"sad", "mse", "grad", "conn"}
    assert s["with_ground_truth"] == 14
    assert s["metrics"]["mse"] == pytest.approx(sum(i / 100 for i in range(14)) / 14)
    assert s["metrics"]["sad"] == pytest.approx(6.5)
    assert s["metrics"]["conn"] == pytest.approx(19.5)
    assert s["metrics_free"]["coverage"] == pytest.approx((14 * 0.25 + 0.5) / 15)
    assert [w["path"] for w in s["worst"]] == [f"set/a{i:02d}.jpg" for i in range(13, 3, -1)]
    assert len(s["worst"]) == WORST_N
    assert s["timings"]["matting_s"] == pytest.approx(0.25 * 91 / 14)
    assert "ranking" not in s  # one model: nothing to rank
    by_path = {it["path"]: it for it in doc["items"]}
    assert [it["path"] for it in doc["items"]] == [r.path for r in rows]
    for it in doc["items"]:
        assert {"path", "state", "error", "metrics"} <= set(it)
    assert by_path["set/a03.jpg"]["metrics"]["mse"] == pytest.approx(0.03)
    assert "sad" not in by_path["set/nogt.png"]["metrics"]  # metrics only where gt was given
    assert by_path["set/nogt.png"]["metrics"]["coverage"] == 0.5
    assert by_path["bad.jpg"]["metrics"] is None
    assert by_path["bad.jpg"]["error"] == "not a recognised image file"


def test_csv_has_one_row_per_item() -> None:
    rows = items_one_model()
    text = build_report("j", rows, ["classical"]).csv_bytes.decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == len(rows)
    assert {"path", "state", "error", "queued_s", "matting_s", "comparison_s", "sad", "mse",
            "grad", "conn", "coverage"} <= set(table[0])
    assert float(table[3]["mse"]) == pytest.approx(0.03)
    assert float(table[3]["matting_s"]) == pytest.approx(0.75)
    assert table[15]["state"] == "rejected" and table[15]["sad"] == ""
    assert table[15]["error"] == "not a recognised image file"


def test_two_models_are_ranked() -> None:
    rows = [
        ReportItem(path=f"p{i}.jpg", state="completed", metrics={
            "classical": gt_m(mse=0.02, sad=5.0),
            "u2netp": {**gt_m(mse=0.01, sad=6.0), "grad": 1.0},
        })
        for i in range(3)
    ]
    rep = build_report("j", rows, ["classical", "u2netp"])
    doc = json.loads(rep.json_bytes)
    s = doc["summary"]
    assert doc["models"] == ["classical", "u2netp"]
    assert s["ranking"]["mse"] == ["u2netp", "classical"]
    assert s["ranking"]["sad"] == ["classical", "u2netp"]
    assert s["ranking"]["grad"] == ["u2netp", "classical"]
    assert s["by_model"]["u2netp"]["mse"] == pytest.approx(0.01)
    assert s["metrics"]["mse"] == pytest.approx(0.02)  # flat metrics: the first model named
    assert doc["items"][0]["metrics_by_model"]["u2netp"]["sad"] == 6.0
    header = next(csv.reader(io.StringIO(rep.csv_bytes.decode())))
    assert "classical.mse" in header and "u2netp.mse" in header and "mse" not in header


def test_flat_metrics_and_missing_model_list_are_understood() -> None:
    rows = [ReportItem(path="a.jpg", state="completed", metrics=gt_m(0.04))]
    doc = json.loads(build_report("j", rows, ["portrait"]).json_bytes)
    assert doc["items"][0]["metrics"]["mse"] == 0.04 and doc["models"] == ["portrait"]
    rows = [ReportItem(path="a.jpg", state="completed", metrics={"identity": gt_m(0.5)})]
    doc = json.loads(build_report("j", rows).json_bytes)
    assert doc["models"] == ["identity"] and doc["summary"]["metrics"]["mse"] == 0.5


def test_no_ground_truth_and_nan_stay_valid_json() -> None:
    rows = [ReportItem(path="a.jpg", state="completed",
                       metrics={"m": {**FREE, "uncertain": float("nan")}})]
    doc = json.loads(build_report("j", rows).json_bytes)
    assert doc["summary"]["metrics"] == {"sad": None, "mse": None, "grad": None, "conn": None}
    assert doc["summary"]["worst"] == []
    assert "uncertain" not in doc["items"][0]["metrics"]


def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_html_embeds_the_data_offline() -> None:
    rows = items_one_model()
    rows.append(ReportItem(path="odd/</script><b>#1.jpg", state="rejected", error="<i>x</i>"))
    page = build_report("job-9", rows, ["classical"]).html_bytes.decode()
    assert not re.search(r"(https?:)?//[a-z0-9]", page, re.I)  # no external URL of any kind
    assert page.count("</script>") == 2  # the data tag and the code, nothing injected
    assert "<i>x</i>" not in page
    data = _embedded(page)
    assert len(data["items"]) == len(rows)
    assert data["items"][-1][0] == "odd/</script><b>#1.jpg"
    for hook in ('id="sort"', 'id="page-next"', 'id="page-prev"', 'id="items"', 'id="state"'):
        assert hook in page
    assert "dataset.path" in page and "loading" in page  # cards carry data-path, lazy images
    assert 'id="worst"' in page and "set/a13.jpg" in page  # summary: worst ten listed


def test_gallery_data_is_compact_and_complete() -> None:
    rows = items_one_model()
    rows[0].compare_output = "final_results/elsewhere.jpg"
    doc = json.loads(build_report("j", rows, ["classical"]).json_bytes)
    data = gallery_data(doc)
    first, nogt, rejected = data["items"][0], data["items"][14], data["items"][15]
    assert first[3] == "final_results/elsewhere.jpg"  # unusual names are kept verbatim
    assert data["items"][1][3] == 1 and data["items"][1][4] == 1  # conventional ones: a flag
    assert rejected[3] == 0 and rejected[5] is None
    mse_col = data["keys"].index("mse")
    assert data["items"][5][5][0][mse_col] == pytest.approx(0.05)
    assert nogt[5][0][mse_col] is None


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_gallery_script_sorts_filters_and_pages(tmp_path: Path) -> None:
    rows = [
        ReportItem(path=f"img{i:03d}.jpg", state="completed",
                   metrics={"classical": gt_m(mse=((i * 37) % 250) / 1000)})
        for i in range(250)
    ]
    rows += [ReportItem(path=f"zz{i}.jpg", state="rejected", error="bad") for i in range(5)]
    page = tmp_path / "index.html"
    page.write_bytes(build_report("j", rows, ["classical"]).html_bytes)
    steps = [
        ["sort", None, "none"],  # the initial render
        ["page-next", None, "click"],
        ["page-next", None, "click"],
        ["sort", "mse-asc", "change"],
        ["sort", "name-desc", "change"],
        ["state", "rejected", "change"],
    ]
    script = Path(__file__).with_name("gallery_dom.js")
    done = subprocess.run(["node", str(script), str(page), json.dumps(steps)],
                          capture_output=True, text=True, timeout=60, check=True)
    first, second, third, asc, by_name, rejected = json.loads(done.stdout)
    mses = [float(it["mse"]) for it in first["items"] + second["items"] + third["items"][:50]]
    assert len(first["items"]) == 100 and first["info"] == "page 1 / 3"
    assert mses == sorted(mses, reverse=True) and mses[0] == 0.249  # worst first by default
    assert third["info"] == "page 3 / 3" and len(third["items"]) == 55
    assert all(it["mse"] == "" for it in third["items"][-5:])  # no score: always last
    assert [float(it["mse"]) for it in asc["items"][:3]] == [0.0, 0.001, 0.002]
    assert by_name["items"][0]["path"] == "zz4.jpg"
    assert rejected["count"].startswith("5 of 255") and len(rejected["items"]) == 5


def test_html_inlines_the_live_pages_gallery_module_byte_for_byte() -> None:
    script = (Path(__file__).resolve().parents[3] / "gateway" / "web" / "gallery.js").read_bytes()
    page = build_report("j", items_one_model(), ["classical"]).html_bytes
    m = re.search(rb'<script type="module">\n(.*?)</script>', page, re.S)
    assert m is not None
    assert m.group(1).startswith(script)  # the very file, then only the call that starts it
    assert m.group(1)[len(script):].strip() == (
        b'offlineGallery(JSON.parse(document.getElementById("data").textContent));')
    assert page.count(script) == 1


def test_gallery_data_names_come_from_python() -> None:
    rows = items_one_model()
    data = gallery_data(json.loads(build_report("j", rows, ["classical"]).json_bytes))
    assert data["names"] == {"sheet": ["final_results/", "_compare.jpg"],
                             "cutout": ["matting_output/", ".png"]}
    sheet = data["names"]["sheet"]
    assert f"{sheet[0]}set/a01{sheet[1]}" == rows[1].compare_output  # what the flag 1 stands for


def two_models_without_gt() -> list[ReportItem]:
    return [ReportItem(path=f"p{i}.jpg", state="completed",
                       metrics={"classical": FREE, "u2netp": {**FREE, "coverage": 0.4}})
            for i in range(3)]


def test_no_ground_truth_shows_no_empty_ranking() -> None:
    page = build_report("j", two_models_without_gt(), ["classical", "u2netp"]).html_bytes.decode()
    header = page.split("<nav>")[0]  # the summary, written in Python
    assert "<b>sad</b>:" not in header and 'id="ranking"' not in header
    assert '<div id="ranking-box"></div>' in header  # filled by the script, see below
    data = _embedded(page)
    assert data["ranking"] == {"sad": [], "mse": [], "grad": [], "conn": []}


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
@pytest.mark.parametrize("with_gt", [False, True])
def test_ranking_shown_only_with_ground_truth(tmp_path: Path, with_gt: bool) -> None:
    rows = two_models_without_gt()
    if with_gt:
        for r in rows:
            r.metrics = {"classical": gt_m(mse=0.02, sad=5.0), "u2netp": gt_m(mse=0.01, sad=6.0)}
    page = tmp_path / "index.html"
    page.write_bytes(build_report("j", rows, ["classical", "u2netp"]).html_bytes)
    script = Path(__file__).with_name("gallery_dom.js")
    done = subprocess.run(["node", str(script), str(page), json.dumps([["sort", None, "none"]])],
                          capture_output=True, text=True, timeout=60, check=True)
    ranking = json.loads(done.stdout)[0]["ranking"]
    if with_gt:
        assert "sad: classical < u2netp" in ranking and "mse: u2netp < classical" in ranking
    else:
        assert "sad:" not in ranking and "mse:" not in ranking
        assert "No ground truth was given" in ranking


def test_csv_cells_never_become_formulas() -> None:
    """A member named like a formula, and an error that starts with `+`, stay text (OWASP)."""
    evil = '=HYPERLINK("http://x","y").png'
    rows = [
        ReportItem(path=evil, state="completed", metrics={"classical": gt_m(0.1)},
                   compare_output='final_results/=HYPERLINK("http://x","y")_compare.jpg'),
        ReportItem(path="b.jpg", state="permanently_failed", error="+cmd|' /C calc'!A0"),
        ReportItem(path="@c.jpg", state="rejected", error="-2+3"),
        ReportItem(path="\tt.jpg", state="rejected", error="\rx"),
    ]
    text = build_report("j", rows, ["classical"]).csv_bytes.decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert table[0]["path"] == "'" + evil
    assert table[1]["error"] == "'+cmd|' /C calc'!A0"
    assert (table[2]["path"], table[2]["error"]) == ("'@c.jpg", "'-2+3")
    assert (table[3]["path"], table[3]["error"]) == ("'\tt.jpg", "'\rx")
    assert float(table[0]["mse"]) == pytest.approx(0.1)  # numbers stay numbers
    assert text.split("\n")[1].startswith('"\'=HYPERLINK(')  # prefixed, and quoted
    for row in table:
        for col in ("path", "error", "matting_output", "compare_output"):
            assert not row[col].startswith(("=", "+", "-", "@", "\t", "\r"))
    # report.json and the gallery keep the real names
    doc = json.loads(build_report("j", rows, ["classical"]).json_bytes)
    assert doc["items"][0]["path"] == evil


def test_confidence_and_fallback_travel_to_report_and_gallery() -> None:
    """Issue 16: report.json items carry the engine's confidence (and a fallback note where
    one happened); the gallery data offers it as the review order, least confident first."""
    rows = [
        ReportItem(path="sure.jpg", state="completed", metrics={"classical": FREE},
                   confidence=0.91),
        ReportItem(path="unsure.jpg", state="completed", metrics={"classical": FREE},
                   confidence=0.12,
                   fallback={"from": "classical", "model": "tiny.onnx", "confidence": 0.12}),
        ReportItem(path="bad.jpg", state="rejected", error="not a recognised image file"),
    ]
    doc = json.loads(build_report("j", rows, ["classical"]).json_bytes)
    by = {it["path"]: it for it in doc["items"]}
    assert by["sure.jpg"]["confidence"] == 0.91 and "fallback" not in by["sure.jpg"]
    assert by["unsure.jpg"]["fallback"]["model"] == "tiny.onnx"
    assert by["bad.jpg"]["confidence"] is None
    data = gallery_data(doc)
    assert data["review_key"] == "confidence" and data["keys"][-1] == "confidence"
    conf = {it[0]: (it[5][0][-1] if it[5] else None) for it in data["items"]}
    assert conf == {"sure.jpg": 0.91, "unsure.jpg": 0.12, "bad.jpg": None}
