"""The gateway's HTTP API, served by uvicorn, on a real SQLite file."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared.storage import Storage
from tests.support.gateway import (
    Gateway,
    StageServer,
    gateway_process,
    image_tasks,
    make_settings,
    seed,
)
from tests.support.images import zip_of_images
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
FAR = time.time() + 3600  # tasks due then are never claimed during a test


def seed_mixed(gw: Gateway, job_id: str = "j1", created_at: float | None = None) -> None:
    now = time.time()
    states = ["completed", "completed", "rejected", "permanently_failed", "pending", "pending"]
    seed(
        gw.settings,
        [{"id": job_id, "state": "running", "total": len(states), "started_at": now - 10,
          "created_at": created_at or now, "model": "classical"}],
        [{"job_id": job_id, "path": f"p{i}.jpg", "state": st, "next_attempt_at": FAR,
          "error": "bad" if st != "completed" else None}
         for i, st in enumerate(states)],
    )


def test_health_is_open_and_the_rest_needs_the_key(start_gateway: Start) -> None:
    gw = start_gateway(api_key="k3y")
    c = gw.client
    assert c.get("/health").json()["status"] == "ok"
    for method, path in [("GET", "/jobs"), ("GET", "/status/x"), ("GET", "/metrics"),
                         ("GET", "/download/x"), ("DELETE", "/jobs/x"), ("POST", "/upload"),
                         ("GET", "/models")]:
        r = c.request(method, path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert "API key" in r.json()["detail"]
    assert c.get("/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/jobs", headers={"Authorization": "Bearer k3y"}).status_code == 200
    r = c.get("/status/x", headers={"Authorization": "Bearer k3y"})
    assert r.status_code == 404


def test_unknown_job_is_404(start_gateway: Start) -> None:
    c = start_gateway().client
    for method, path in [("GET", "/status/nope"), ("GET", "/jobs/nope/tasks"),
                         ("GET", "/download/nope"), ("DELETE", "/jobs/nope")]:
        r = c.request(method, path)
        assert r.status_code == 404, path
        assert "nope" in r.json()["detail"]


def test_status_counts_progress_and_eta(start_gateway: Start) -> None:
    gw = start_gateway()
    seed_mixed(gw)
    s = gw.client.get("/status/j1").json()
    assert s["job_id"] == "j1" and s["state"] == "running" and s["total"] == 6
    assert s["counts"]["completed"] == 2 and s["counts"]["pending"] == 2
    assert s["counts"]["dispatched_matting"] == 0
    assert (s["completed"], s["failed"], s["rejected"]) == (2, 1, 1)
    assert s["progress"] == pytest.approx(100 * 4 / 6, abs=0.01)
    # 3 images processed (rejected ones never are) in about 10 s; 2 left
    assert 0.2 < s["throughput_per_s"] < 0.31
    assert s["eta_s"] == pytest.approx(2 / s["throughput_per_s"], rel=0.05)
    assert s["created_at"] <= s["updated_at"]
    assert set(s["stages"]) == {"matting", "comparison"}


def test_jobs_list_and_tasks_pages(start_gateway: Start) -> None:
    gw = start_gateway()
    seed_mixed(gw, "old", created_at=time.time() - 100)
    seed_mixed(gw, "new")
    c = gw.client
    doc = c.get("/jobs").json()
    assert doc["total"] == 2 and [j["job_id"] for j in doc["jobs"]] == ["new", "old"]
    assert doc["jobs"][0]["counts"]["completed"] == 2
    assert [j["job_id"] for j in c.get("/jobs?limit=1&offset=1").json()["jobs"]] == ["old"]
    assert c.get("/jobs?limit=0").status_code == 422
    page = c.get("/jobs/old/tasks?state=completed").json()
    assert page["total"] == 2 and [t["path"] for t in page["tasks"]] == ["p0.jpg", "p1.jpg"]
    page = c.get("/jobs/old/tasks?limit=2&offset=2").json()
    assert page["total"] == 6 and [t["state"] for t in page["tasks"]] == [
        "rejected", "permanently_failed"]
    r = c.get("/jobs/old/tasks?state=bogus")
    assert r.status_code == 400 and "pending" in r.json()["detail"]


def test_cancel_removes_files_and_stops_dispatch(start_gateway: Start,
                                                 stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    stage_server.plan["matting"] = ["slow:0.5"] * 50
    rows = image_tasks(gw.storage, "j1", [f"{i}.jpg" for i in range(40)])
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 40}], rows)
    wait_for(lambda: len(stage_server.calls) > 0)
    r = gw.client.delete("/jobs/j1")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert not gw.storage.job_input("j1").exists()
    calls = len(stage_server.calls)
    # answers in flight come back and are ignored, their files removed; nothing new is sent
    wait_for(lambda: stage_server.active["matting"] == 0)
    wait_for(lambda: not gw.storage.job_matting("j1").exists())
    time.sleep(0.3)
    assert len(stage_server.calls) == calls
    s = gw.client.get("/status/j1").json()
    assert s["state"] == "cancelled" and s["counts"]["matting_done"] == 0
    assert gw.client.get("/download/j1").status_code == 410


def test_upload_options_are_checked(start_gateway: Start) -> None:
    c = start_gateway().client
    r = c.post("/upload?model=bogus", content=b"x")
    assert r.status_code == 400
    assert r.json()["detail"].startswith("unknown model 'bogus'; available: ")
    assert "classical" in r.json()["detail"]
    r = c.post("/upload?model=classical,nope", content=b"x")
    assert r.status_code == 400 and "'nope'" in r.json()["detail"]
    r = c.post("/upload?output=cmyk", content=b"x")
    assert r.status_code == 400 and "rgba" in r.json()["detail"]
    r = c.post("/upload?callback_url=ftp://host/x", content=b"x")
    assert r.status_code == 400 and "callback_url" in r.json()["detail"]
    assert c.get("/jobs").json()["total"] == 0


def test_models_and_metrics(start_gateway: Start) -> None:
    gw = start_gateway()
    seed_mixed(gw)
    models = gw.client.get("/models").json()
    assert models["default"] == "classical"
    assert {"classical", "identity"} <= {m["name"] for m in models["models"]}
    text = gw.client.get("/metrics").text
    assert 'mattepipe_gateway_tasks{state="completed"} 2.0' in text
    assert 'mattepipe_gateway_queue_depth{stage="matting"} 2.0' in text
    assert 'mattepipe_gateway_jobs{state="running"} 1.0' in text
    assert "mattepipe_gateway_stage_seconds_bucket" in text


def test_a_job_runs_to_the_end_through_the_api(start_gateway: Start,
                                               stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    rows = image_tasks(gw.storage, "j1", ["a.jpg", "sub/b.jpg", "sub/c.jpg"])
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 3}], rows)
    wait_for(lambda: gw.client.get("/status/j1").json()["state"] != "running")
    s = gw.client.get("/status/j1").json()
    assert s["state"] == "completed" and s["progress"] == 100 and s["eta_s"] == 0
    assert s["throughput_per_s"] > 0
    assert s["stages"]["matting"]["done"] == 3
    assert s["stages"]["matting"]["workers"] == {"mw-1": 3}
    text = gw.client.get("/metrics").text
    assert 'mattepipe_gateway_stage_seconds_count{stage="comparison"} 3.0' in text


def test_restart_drops_cut_uploads_and_resumes_leased_tasks(
    start_gateway: Start, stage_server: StageServer, data_dir: Path
) -> None:
    settings = make_settings(data_dir, stage_server.url)
    storage = Storage(data_dir)
    cut = storage.job_input("cut") / "upload.zip"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(b"PK half an upload")
    rows = image_tasks(storage, "run", ["a.jpg", "b.jpg"], state="dispatched_matting",
                       lease_expires_at=time.time() + 3600, matting_dispatched_at=1.0)
    seed(settings, [{"id": "cut", "state": "uploading"},
                    {"id": "run", "state": "running", "total": 2}], rows)
    gw = start_gateway(stage_server.url)  # as if the previous process had died mid-way
    wait_for(lambda: gw.client.get("/status/run").json()["state"] != "running")
    s = gw.client.get("/status/run").json()
    assert s["state"] == "completed" and s["completed"] == 2
    tasks = gw.client.get("/jobs/run/tasks").json()["tasks"]
    assert [t["retry_count"] for t in tasks] == [0, 0]
    assert gw.client.get("/status/cut").status_code == 404
    assert not storage.job_input("cut").exists()


def test_python_m_gateway_serves(data_dir: Path) -> None:
    with gateway_process({"DATA_DIR": str(data_dir), "API_KEY": "k"}) as (_, url):
        assert httpx.get(f"{url}/jobs").status_code == 401
        r = httpx.get(f"{url}/jobs", headers={"Authorization": "Bearer k"})
        assert r.json()["jobs"] == []
        assert (data_dir / "mattepipe.db").is_file()



def test_failed_upload_leaves_no_half_job(start_gateway: Start) -> None:
    pytest.importorskip("gateway.intake.receive")
    gw = start_gateway(max_upload_size=1000)
    r = gw.client.post("/upload?filename=big.zip", content=b"x" * 5000,
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 413 and r.json()["detail"]
    assert gw.client.get("/jobs").json()["total"] == 0
    assert list(gw.storage.job_input("x").parent.iterdir()) == []


def test_upload_to_download(start_gateway: Start, stage_server: StageServer) -> None:
    pytest.importorskip("gateway.intake.receive")
    pytest.importorskip("gateway.intake.ingest")
    gw = start_gateway(stage_server.url)
    r = gw.client.post("/upload?filename=set.zip&output=rgba",
                       content=zip_of_images(["one.jpg", "dir/two.jpg"]),
                       headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["status_url"] == f"/status/{doc['job_id']}"
    wait_for(lambda: gw.client.get(doc["status_url"]).json()["state"]
             not in ("ingesting", "running"))
    s = gw.client.get(doc["status_url"]).json()
    assert s["state"] == "completed" and s["total"] == 2, s
    zf = zipfile.ZipFile(io.BytesIO(gw.client.get(doc["download_url"]).content))
    assert {"matting_output/one.png", "final_results/dir/two_compare.jpg"} <= set(zf.namelist())
