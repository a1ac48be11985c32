"""The content-hash cache on the real gateway under uvicorn with a stage server: duplicates in a
job and across jobs of one tenant are not sent to the matting stage again, their files are
there and the report says `cached`; other tenants, other options, a changed model file,
RESULT_CACHE=0 and a result whose files are gone all run the model."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gateway.intake.jobs import validate_output_options
from gateway.pipeline.result_cache import job_salt
from tests.gateway.api.test_tenants import KEY_A, KEY_B, KEYS, auth
from tests.support.gateway import Gateway, StageServer
from tests.support.images import make_zip
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def run_job(gw: Gateway, members: dict[str, bytes], key: str | None = None,
            query: str = "") -> dict[str, dict[str, object]]:
    """Upload `members` as a zip, wait for the end; report.json's items by path."""
    headers = {"Content-Type": "application/zip", **(auth(key) if key else {})}
    r = gw.client.post(f"/upload?filename=set.zip{query}", content=make_zip(members),
                       headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    wait_for(lambda: gw.client.get(f"/status/{job_id}", headers=headers).json()["state"]
             in ("completed", "completed_with_errors"), what=f"job {job_id} ends")
    z = zipfile.ZipFile(io.BytesIO(gw.client.get(f"/download/{job_id}", headers=headers).content))
    report = json.loads(z.read("report.json"))
    assert report["summary"]["cached"] == sum(bool(i["cached"]) for i in report["items"])
    for item in report["items"]:  # a reused cut-out is in the zip like any other
        if item["state"] == "completed":
            assert item["matting_output"] in z.namelist()
    return {str(i["path"]): i for i in report["items"]}


def matting_calls(st: StageServer) -> int:
    return sum(1 for route, _ in st.calls if route == "matting")


@pytest.mark.parametrize("batch", [1, 8], ids=["one-call-per-task", "batched-calls"])
def test_duplicates_in_a_job_and_a_later_one_are_reused(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, batch: int
) -> None:
    gw = start_gateway(stage_server.url, result_cache=True, stage_batch_size=batch)
    a, b = png(1), png(2)
    items = run_job(gw, {"a.png": a, "copy/a.png": a, "a2.png": a, "b.png": b})
    assert matting_calls(stage_server) == 2  # a once, b once
    assert sorted(bool(i["cached"]) for i in items.values()) == [False, False, True, True]
    assert all(i["state"] == "completed" for i in items.values())
    assert [r for r, _ in stage_server.calls].count("compare") == 4  # sheets for every image
    later = run_job(gw, {"again.png": a, "new.png": png(3)})
    assert matting_calls(stage_server) == 3  # only the new image ran
    assert later["again.png"]["cached"] is True and later["new.png"]["cached"] is False


def test_no_reuse_across_tenants_options_or_with_the_cache_off(
    start_gateway: Start, stage_server: StageServer
) -> None:
    gw = start_gateway(stage_server.url, result_cache=True, **KEYS)
    a = png(4)
    run_job(gw, {"a.png": a}, KEY_A)
    assert matting_calls(stage_server) == 1
    other_tenant = run_job(gw, {"a.png": a}, KEY_B)
    assert other_tenant["a.png"]["cached"] is False and matting_calls(stage_server) == 2
    other_options = run_job(gw, {"a.png": a}, KEY_A, "&output=alpha")
    assert other_options["a.png"]["cached"] is False and matting_calls(stage_server) == 3
    same = run_job(gw, {"a.png": a}, KEY_A)
    assert same["a.png"]["cached"] is True and matting_calls(stage_server) == 3


def test_the_cache_off_runs_every_image(start_gateway: Start,
                                        stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, result_cache=False)
    a = png(5)
    items = run_job(gw, {"a.png": a, "b.png": a})
    assert matting_calls(stage_server) == 2 and not any(i["cached"] for i in items.values())


def test_a_result_whose_files_are_gone_runs_again(start_gateway: Start,
                                                  stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, result_cache=True)
    a = png(6)
    r = gw.client.post("/upload?filename=set.zip", content=make_zip({"a.png": a}),
                       headers={"Content-Type": "application/zip"})
    job_id = r.json()["job_id"]
    wait_for(lambda: gw.client.get(f"/status/{job_id}").json()["state"] == "completed",
             what="first job ends")
    assert gw.client.delete(f"/jobs/{job_id}").status_code in (200, 202, 204)
    again = run_job(gw, {"a.png": a})
    assert again["a.png"]["cached"] is False and matting_calls(stage_server) == 2


def test_the_salt_names_tenant_models_files_and_options(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    opts = validate_output_options("rgba", None)
    base = job_salt(["classical"], "rgba", opts, "t1", models)
    assert base == job_salt(["classical"], "rgba", opts, "t1", models)
    assert base != job_salt(["classical"], "rgba", opts, "t2", models)
    assert base != job_salt(["classical"], "alpha", opts, "t1", models)
    assert base != job_salt(["classical"], "rgba", validate_output_options(
        "rgba", {"background": "#ffffff"}), "t1", models)
    assert base != job_salt(["identity", "classical"], "rgba", opts, "t1", models)
    f = models / "u2netp.onnx"
    f.write_bytes(b"one")
    first = job_salt(["u2netp"], "rgba", opts, "t1", models)
    f.write_bytes(b"other model")  # a replaced model file is another model
    assert job_salt(["u2netp"], "rgba", opts, "t1", models) != first
