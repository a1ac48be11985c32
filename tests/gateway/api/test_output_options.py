"""Output options through the gateway: checked (400 with a detail that names the field) on
`POST /upload`, `POST /jobs` and tus autojob metadata; stored on the job, echoed by /status,
sent to the matting stage, and the zip names the cut-outs by the format."""

from __future__ import annotations

import io
import os
import sqlite3
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.db.tables import Upload
from shared.storage import Storage
from tests.gateway.api.test_tus import TUS, meta, noise_zip
from tests.support.gateway import Gateway, StageServer, make_settings, seed
from tests.support.images import zip_of_images
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]



BAD = [
    ("format=gif", "unknown format 'gif'"),
    ("max_size=8", "max_size must be between 16"),
    ("max_size=big", "max_size must be a whole number, not 'big'"),
    ("max_size=20.5", "max_size must be a whole number"),
    ("background=%23ggg", "background must be a colour"),
    ("background=white", "background must be a colour"),
    ("crop=-1", "crop must be a margin between 0 and 100"),
    ("crop=nan", "crop must be a margin"),
    ("crop=ten", "crop must be a number"),
    ("output=alpha&background=%23fff", "background has no meaning with output=alpha"),
]


@pytest.mark.parametrize(("query", "detail"), BAD)
def test_bad_options_are_a_400_that_says_why(start_gateway: Start, query: str,
                                             detail: str) -> None:
    c = start_gateway().client
    r = c.post(f"/upload?filename=a.jpg&{query}", content=b"x")
    assert r.status_code == 400, r.text
    assert detail in r.json()["detail"]
    assert c.get("/jobs").json()["total"] == 0  # nothing else happened


def test_post_jobs_and_tus_metadata_check_them_too(start_gateway: Start) -> None:
    c = start_gateway().client
    r = c.post("/jobs", json={"upload_id": "0" * 32, "max_size": 2})
    assert r.status_code == 400 and "max_size must be between" in r.json()["detail"]
    r = c.post("/jobs", json={"upload_id": "0" * 32, "format": "bmp"})
    assert r.status_code == 400 and "unknown format" in r.json()["detail"]
    r = c.post("/jobs", json={"upload_id": "0" * 32, "crop": True})
    assert r.status_code == 400 and "crop must be a number" in r.json()["detail"]
    r = c.post("/files/", headers={**TUS, "Upload-Length": "5", "Upload-Metadata": meta(
        filename="x.zip", autojob="1", background="#12345")})
    assert r.status_code == 400 and "background must be a colour" in r.json()["detail"]


def test_options_are_stored_echoed_and_sent(start_gateway: Start,
                                            stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    r = gw.client.post("/upload?filename=set.zip&format=WEBP&max_size=64&background=%23FFF"
                       "&crop=5", content=zip_of_images(["one.jpg", "dir/two.jpg"]),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    doc = r.json()
    wait_for(lambda: gw.client.get(doc["status_url"]).json()["state"]
             not in ("ingesting", "running"))
    s = gw.client.get(doc["status_url"]).json()
    assert s["state"] == "completed", s
    assert (s["format"], s["max_size"], s["background"], s["crop"]) == ("webp", 64, "#ffffff",
                                                                         5.0)
    matting = [q for q in stage_server.requests if q["output"].startswith("matting_output/")]
    assert {q["output"].rsplit("/", 1)[-1] for q in matting} == {"one.webp", "two.webp"}
    params = matting[0]["params"]
    assert (params["format"], params["max_size"], params["background"], params["crop"]) == (
        "webp", 64, "#ffffff", 5.0)
    compare = [q for q in stage_server.requests if q["output"].startswith("final_results/")]
    # the comparison measures the full-size matte, not the shaped cut-out
    assert all(q["params"]["mattes"][0]["path"].endswith(".alpha.png") for q in compare)
    zf = zipfile.ZipFile(io.BytesIO(gw.client.get(doc["download_url"]).content))
    names = set(zf.namelist())
    assert {"matting_output/one.webp", "matting_output/dir/two.webp"} <= names
    assert not any(n.endswith(".alpha.png") or n.endswith("one.png") for n in names)
    report = zf.read("report.json").decode()
    assert "matting_output/one.webp" in report


def test_defaults_are_unchanged(start_gateway: Start, stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    r = gw.client.post("/upload?filename=a.jpg", content=zip_of_images(["a.jpg"]),
                       headers={"Content-Type": "application/zip"})
    s = gw.client.get(r.json()["status_url"]).json()
    assert (s["format"], s["max_size"], s["background"], s["crop"]) == ("png", None, None, None)


def test_a_tus_autojob_carries_the_options(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(data_dir, stage_server.url)
    storage = Storage(data_dir)
    src = tmp_path / "set.zip"
    noise_zip(src, ["p.png"], 40)
    uid = os.urandom(16).hex()
    storage.upload_path(uid).parent.mkdir(parents=True, exist_ok=True)
    storage.upload_path(uid).write_bytes(src.read_bytes())
    seed(settings, [], [])
    db = sqlite3.connect(data_dir / "mattepipe.db")
    with db:
        db.execute(
            f"INSERT INTO {Upload.__tablename__} (id, length, filename, metadata_json,"
            " completed_at, created_at, expires_at) VALUES (?, ?, 'set.zip', ?, ?, ?, ?)",
            (uid, src.stat().st_size, '{"autojob": "1", "format": "webp", "max_size": "32"}',
             None, time.time(), time.time() + 3600),
        )
    db.close()
    gw = start_gateway(stage_server.url)
    wait_for(lambda: gw.client.get(f"/status/{uid}").status_code == 200
             and gw.client.get(f"/status/{uid}").json()["state"] == "completed")
    s = gw.client.get(f"/status/{uid}").json()
    assert (s["format"], s["max_size"]) == ("webp", 32)
    assert (storage.job_matting(uid) / "p.webp").is_file()
