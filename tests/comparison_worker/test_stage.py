"""The comparison worker (in-process server, real stage): sheet, metrics, gt handling."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from comparison_worker.app import create_app
from shared.settings import Settings
from tests.support.images import stage_inputs
from tests.support.servers import INTERNAL_HEADERS, INTERNAL_TOKEN, ThreadServer
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    alpha = stage_inputs(d, 0)
    rgba = np.dstack([np.full((40, 60, 3), 200, np.uint8), alpha])
    Image.fromarray(rgba, "RGBA").save(d / "matting_output/j/p.png")
    Image.fromarray(alpha, "L").save(d / "input/j/gt_same.png")
    gt = np.zeros((40, 60), np.uint8)
    gt[10:30, 15:30] = 255  # half the matte's area is wrong
    Image.fromarray(gt, "L").save(d / "input/j/gt_half.png")
    Image.fromarray(alpha, "L").resize((120, 80), Image.Resampling.NEAREST).save(
        d / "input/j/gt_big.png")
    return d


@pytest.fixture(scope="module")
def worker(data_dir: Path) -> Iterator[ThreadServer]:
    settings = Settings(data_dir=data_dir, comparison_api_url="", worker_threads=1,
                        internal_token=INTERNAL_TOKEN)
    with ThreadServer(create_app(settings, "cmp-test", 0)) as srv:
        wait_for(lambda: httpx.get(srv.url + "/health").status_code == 200, what="ready")
        yield srv


def compare(srv: ThreadServer, output: str, matte: Any = "matting_output/j/p.png",
            **params: Any) -> httpx.Response:
    body = {"task_id": 7, "job_id": "j", "input": "input/j/p.png", "output": output,
            "params": {"mattes": [{"model": "classical", "path": matte}], **params}}
    return httpx.post(srv.url + "/compare", json=body, timeout=60, headers=INTERNAL_HEADERS)


def test_sheet_is_written_as_jpeg(worker: ThreadServer, data_dir: Path) -> None:
    r = compare(worker, "final_results/j/p_compare.jpg")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == "final_results/j/p_compare.jpg" and body["worker_id"] == "cmp-test"
    with Image.open(data_dir / body["output"]) as im:
        assert im.format == "JPEG"
        assert im.width >= 60 and im.height >= 40
    assert body["extra"]["has_gt"] is False
    assert "classical" in body["extra"]["metrics"]


def test_metrics_against_ground_truth(worker: ThreadServer, data_dir: Path) -> None:
    same = compare(worker, "final_results/j/s_compare.jpg", gt="input/j/gt_same.png").json()
    assert same["extra"]["metrics"]["classical"]["sad"] == pytest.approx(0.0, abs=1e-6)
    half = compare(worker, "final_results/j/h_compare.jpg", gt="input/j/gt_half.png",
                   metrics_output="final_results/j/h_metrics.json").json()
    m = half["extra"]["metrics"]["classical"]
    assert m["sad"] == pytest.approx(20 * 15 / 1000.0, rel=1e-3)
    assert m["mse"] == pytest.approx(20 * 15 / (40 * 60), rel=1e-3)
    saved = json.loads((data_dir / "final_results/j/h_metrics.json").read_text())
    assert saved["metrics"] == half["extra"]["metrics"] and saved["task_id"] == 7


def test_ground_truth_of_another_size_is_resized(worker: ThreadServer) -> None:
    r = compare(worker, "final_results/j/b_compare.jpg", gt="input/j/gt_big.png")
    assert r.status_code == 200, r.text
    extra = r.json()["extra"]
    assert any("resized" in n for n in extra["notes"])
    assert extra["metrics"]["classical"]["sad"] < 1.0  # same shape, only edges differ


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"matte": None}, "params.mattes.0.path"),
        ({"matte": "../../etc/passwd"}, "DATA_DIR"),
        ({"gt": "/etc/shadow"}, "DATA_DIR"),
        ({"matte": "matting_output/j/none.png"}, "not found"),
        ({"metrics_output": 5}, "metrics_output"),
        ({"model": "classical"}, "params.model: Extra inputs"),  # single-model fields: gone
    ],
)
def test_bad_parameters_are_refused(worker: ThreadServer, params: dict[str, Any],
                                    reason: str) -> None:
    r = compare(worker, "final_results/j/bad_compare.jpg", **params)
    assert r.status_code == 400, r.text
    assert r.json()["retryable"] is False and reason in r.json()["detail"]


@pytest.mark.parametrize(
    ("target", "params"),
    [
        ("mattepipe.db", {}),  # once replaced the task database with a JPEG
        ("final_results/j/x.html", {}),  # would be served by the gateway as a page
        ("final_results/j/x_compare.jpg.html", {}),
        ("final_results/other/p_compare.jpg", {}),  # another job's folder
        ("matting_output/j/p_compare.jpg", {}),  # another stage's folder
        ("final_results/p_compare.jpg", {}),  # no job folder at all
        ("final_results/j/p_compare.jpg", {"metrics_output": "mattepipe.db"}),
        ("final_results/j/p_compare.jpg", {"metrics_output": "final_results/j/m.html"}),
        ("final_results/j/p_compare.jpg", {"metrics_output": "final_results/other/p_metrics.json"}),
        ("final_results/j/p_compare.jpg", {"gt": "input/other/gt.png"}),
        ("final_results/j/p_compare.jpg", {"matte": "matting_output/other/p.png"}),
        ("final_results/j/p_compare.jpg", {"matte": "input/j/p.png"}),
    ],
)
def test_a_worker_writes_only_its_own_outputs_of_its_job(
    worker: ThreadServer, data_dir: Path, target: str, params: dict[str, Any]
) -> None:
    decoys = [data_dir / "mattepipe.db", data_dir / "final_results/other/p_compare.jpg",
              data_dir / "final_results/other/p_metrics.json", data_dir / "input/other/gt.png",
              data_dir / "matting_output/other/p.png"]
    for d in decoys:
        d.parent.mkdir(parents=True, exist_ok=True)
        d.write_bytes(b"precious")
    fresh = data_dir / "final_results/j/p_compare.jpg"
    fresh.unlink(missing_ok=True)
    r = compare(worker, target, **params)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["retryable"] is False and ("under" in err["detail"] or "ending" in err["detail"])
    assert all(d.read_bytes() == b"precious" for d in decoys)
    assert not (data_dir / "final_results/j/x.html").exists()
    assert not (data_dir / "final_results/j/m.html").exists()
    assert not fresh.exists()  # nothing written, not even the good sheet


def test_confidence_is_printed_on_the_sheet_and_checked(worker: ThreadServer,
                                                        data_dir: Path) -> None:
    """Issue 16: the matting engine's confidence rides in `MatteRef.confidence` and is part of
    the caption (so the sheet differs from one without it); out of [0, 1] is a 400."""
    body = {"task_id": 7, "job_id": "j", "input": "input/j/p.png",
            "params": {"mattes": [{"model": "classical", "path": "matting_output/j/p.png",
                                   "confidence": 0.37}]}}
    plain = compare(worker, "final_results/j/nc_compare.jpg")
    assert plain.status_code == 200, plain.text
    r = httpx.post(worker.url + "/compare",
                   json={**body, "output": "final_results/j/c_compare.jpg"},
                   timeout=60, headers=INTERNAL_HEADERS)
    assert r.status_code == 200, r.text
    assert "confidence" not in r.json()["extra"]["metrics"]["classical"]  # not a metric
    with_c = np.asarray(Image.open(data_dir / "final_results/j/c_compare.jpg"))
    without = np.asarray(Image.open(data_dir / "final_results/j/nc_compare.jpg"))
    assert with_c.shape != without.shape or np.abs(with_c.astype(int) - without).max() > 50
    body["params"]["mattes"][0]["confidence"] = 1.5
    bad = httpx.post(worker.url + "/compare", json={**body, "output": "final_results/j/b.jpg"},
                     timeout=60, headers=INTERNAL_HEADERS)
    assert bad.status_code == 400 and "confidence" in bad.json()["detail"]


def test_caption_names_the_confidence() -> None:
    from comparison_worker.sheet import CONFIDENCE_KEY, caption_lines

    lines = caption_lines("classical", {"mse": 0.01, "coverage": 0.5, CONFIDENCE_KEY: 0.375})
    assert "confidence 0.38" in lines[-1] or "confidence 0.37" in lines[-1]


def test_a_large_jpeg_is_decoded_at_its_tiles_scale(data_dir: Path) -> None:
    """Issue 14, point 2: a 1920×1080 JPEG's sheet comes from a 1/4-scale decode (its tiles
    are 480×270), with the metrics of the full-size matte and the sheet of the full decode's
    size, a few levels from it at most."""
    from comparison_worker.engine import compare as compare_images
    from comparison_worker.stage import ComparisonStage
    from shared.imaging import decode_rgb
    from shared.schemas import ComparisonRequest
    from shared.storage import Storage

    w, h = 1920, 1080
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    Image.fromarray(rgb).save(data_dir / "input/j/big.jpg", quality=92)
    alpha = (np.hypot(xx - w / 2, yy - h / 2) < 400).astype(np.uint8) * 255
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(data_dir / "matting_output/j/big.png")
    settings = Settings(data_dir=data_dir, comparison_api_url="", worker_threads=1)
    stage = ComparisonStage(settings)
    req = ComparisonRequest.model_validate(
        {"task_id": 8, "job_id": "j", "input": "input/j/big.jpg",
         "output": "final_results/j/big_compare.jpg",
         "params": {"mattes": [{"model": "u2netp", "path": "matting_output/j/big.png"}]}})
    item = stage.prepare(req, Storage.from_settings(settings))
    assert item.size == (h, w) and item.rgb.shape == (h // 4, w // 4, 3)
    assert item.mattes[0][1].shape == (h, w) and not item.notes
    fast = stage.run_batch("compare", [item])[0]
    full = compare_images(decode_rgb(data_dir / "input/j/big.jpg"), item.mattes, None)
    assert fast.metrics == full.metrics
    assert fast.sheet.shape == full.sheet.shape
    diff = np.abs(fast.sheet.astype(np.int16) - full.sheet.astype(np.int16))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8


# --- issue 17, orchestration: the metrics file written by orjson --------------------------------
def test_the_metrics_file_keeps_json_dumps_layout(worker: ThreadServer, data_dir: Path) -> None:
    """For this document, byte for byte what `json.dumps(doc, indent=2)` wrote before (ASCII
    text, metric names that are StrEnum members written as their values), through a real
    worker; in general the same values and layout (a float may be spelled otherwise)."""
    r = compare(worker, "final_results/j/o_compare.jpg", gt="input/j/gt_half.png",
                metrics_output="final_results/j/o_metrics.json")
    assert r.status_code == 200, r.text
    raw = (data_dir / "final_results/j/o_metrics.json").read_bytes()
    assert raw == json.dumps(json.loads(raw), indent=2).encode()
    assert json.loads(raw)["metrics"] == r.json()["extra"]["metrics"]
