"""The web page's routes on the real gateway: the page and its static files, and a job's
output files confined to its two output folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api.web import STATIC, WEB_DIR
from gateway.app import create_app
from shared.keys import key_hash
from shared.states import FINAL_JOB_STATES, FINAL_TASK_STATES
from shared.storage import Storage
from tests.support.gateway import make_settings, seed
from tests.support.servers import ThreadServer

JOB = "job1"
KEY = "s3cret"
"""The key the keyed tests use; the seeded jobs are its (a job answers only to its key)."""


@pytest.fixture
def files(data_dir: Path) -> Storage:
    st = Storage(data_dir)
    for rel, body in {
        f"final_results/{JOB}/set/a b#1_compare.jpg": b"\xff\xd8sheet",
        f"matting_output/{JOB}/set/a b#1.png": b"\x89PNGcut",
        f"input/{JOB}/upload.zip": b"PK secret upload",
        "final_results/other/x_compare.jpg": b"\xff\xd8other job",
        "mattepipe.db.bak": b"not for you",
    }.items():
        p = st.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    seed(make_settings(data_dir),
         [{"id": j, "state": "completed_with_errors", "total": 3, "model": "classical",
           "api_key_hash": key_hash(KEY)} for j in (JOB, "other")], [])
    return st


def client_for(data_dir: Path, **kw: object) -> Iterator[httpx.Client]:
    app = create_app(make_settings(data_dir, **kw))
    with ThreadServer(app) as srv, httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c


@pytest.fixture
def client(data_dir: Path, files: Storage) -> Iterator[httpx.Client]:
    yield from client_for(data_dir)


def test_page_and_static_files(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == (WEB_DIR / "index.html").read_text()
    for name, media in STATIC.items():
        r = client.get(f"/static/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(media)
        assert r.content == (WEB_DIR / name).read_bytes()
    # Only the listed names: not the page's Python neighbours, not a climb out of the folder.
    for bad in ("index.html", "web.py", "..%2F..%2Fapp.py", "%2E%2E%2Fauth.py"):
        r = client.get(f"/static/{bad}")
        assert r.status_code == 404, bad
        assert "detail" in r.json()


def test_a_jobs_sheet_and_cut_out_by_their_zip_names(client: httpx.Client) -> None:
    r = client.get(f"/jobs/{JOB}/files/final_results/set/a%20b%231_compare.jpg")
    assert r.status_code == 200 and r.content == b"\xff\xd8sheet"
    assert r.headers["content-type"] == "image/jpeg"
    r = client.get(f"/jobs/{JOB}/files/matting_output/set/a%20b%231.png")
    assert r.status_code == 200 and r.content == b"\x89PNGcut"
    assert r.headers["content-type"] == "image/png"


@pytest.mark.parametrize("path", [
    "input/upload.zip",                         # the upload folder is not an output
    "final_results/../input/job1/upload.zip",   # climbing out
    "final_results/%2E%2E/other/x_compare.jpg",  # into another job
    "final_results/../../mattepipe.db.bak",
    "final_results/set",                        # a folder, not a file
    "final_results/",
    "final_results/set/missing_compare.jpg",
    "mattepipe.db.bak",
])
def test_everything_else_is_404(client: httpx.Client, path: str) -> None:
    r = client.get(f"/jobs/{JOB}/files/{path}")
    assert r.status_code == 404, r.text
    assert r.json()["detail"]
    assert b"secret" not in r.content and b"other job" not in r.content


def test_another_jobs_id_cannot_reach_outside_it(client: httpx.Client) -> None:
    assert client.get("/jobs/other/files/final_results/x_compare.jpg").status_code == 200
    assert client.get("/jobs/..%2Finput/files/final_results/x_compare.jpg").status_code == 404
    assert client.get("/jobs/../files/final_results/other/x_compare.jpg").status_code == 404


def test_api_key_guards_files_not_the_page(data_dir: Path, files: Storage) -> None:
    for c in client_for(data_dir, api_key="s3cret"):
        assert c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200
        url = f"/jobs/{JOB}/files/final_results/set/a%20b%231_compare.jpg"
        r = c.get(url)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert c.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = c.get(url, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.content == b"\xff\xd8sheet"


def test_gallery_js_is_served_and_imported_by_the_page(client: httpx.Client) -> None:
    assert "gallery.js" in STATIC
    r = client.get("/static/gallery.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.content == (WEB_DIR / "gallery.js").read_bytes()
    app_js = client.get("/static/app.js").text
    assert 'from "./gallery.js"' in app_js
    assert '<script type="module" src="/static/app.js">' in client.get("/").text


def test_api_info_gives_the_final_states_the_page_uses(client: httpx.Client) -> None:
    r = client.get("/api-info")
    assert r.status_code == 200
    info = r.json()
    assert set(info["final_job_states"]) == {s.value for s in FINAL_JOB_STATES}
    assert set(info["final_task_states"]) == {s.value for s in FINAL_TASK_STATES}
    assert "mse" in info["metrics"]["ground_truth"] and "coverage" in info["metrics"]["free"]
    # the page no longer spells them out itself, nor the output names
    app_js = (WEB_DIR / "app.js").read_text() + (WEB_DIR / "gallery.js").read_text()
    for rule in ('"completed_with_errors"', "_compare.jpg", '"final_results/', '"matting_output/'):
        assert rule not in app_js, rule


def seed_gallery(data_dir: Path) -> None:
    seed(make_settings(data_dir), [],  # the job row is the `files` fixture's
         [{"job_id": JOB, "path": "set/a b#1.jpg", "state": "completed",
           "metrics": {"classical": {"mse": 0.01, "coverage": 0.4}},
           "compare_output": f"final_results/{JOB}/set/a b#1_compare.jpg",
           "matting_output": f"matting_output/{JOB}/set/a b#1.png"},
          {"job_id": JOB, "path": "bad.jpg", "state": "rejected", "error": "not an image"}])


def test_gallery_rows_carry_their_image_urls(data_dir: Path, files: Storage) -> None:
    seed_gallery(data_dir)
    for c in client_for(data_dir):
        r = c.get(f"/jobs/{JOB}/gallery")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == 2
        done, bad = body["tasks"]
        assert done["path"] == "set/a b#1.jpg" and done["metrics"]["classical"]["mse"] == 0.01
        assert done["sheet"] == f"/jobs/{JOB}/files/final_results/set/a%20b%231_compare.jpg"
        assert done["cutout"] == f"/jobs/{JOB}/files/matting_output/set/a%20b%231.png"
        assert c.get(done["sheet"]).content == b"\xff\xd8sheet"  # the URL really serves it
        assert c.get(done["cutout"]).content == b"\x89PNGcut"
        assert (bad["state"], bad["error"], bad["sheet"], bad["cutout"]) == (
            "rejected", "not an image", None, None)
        only = c.get(f"/jobs/{JOB}/gallery", params={"state": "rejected"}).json()
        assert [t["path"] for t in only["tasks"]] == ["bad.jpg"] and only["total"] == 1
        assert c.get(f"/jobs/{JOB}/gallery", params={"state": "nope"}).status_code == 400
        assert c.get("/jobs/missing/gallery").status_code == 404


def test_gallery_rows_need_the_key_the_info_does_not(data_dir: Path, files: Storage) -> None:
    seed_gallery(data_dir)
    for c in client_for(data_dir, api_key="s3cret"):
        assert c.get("/api-info").status_code == 200
        assert c.get(f"/jobs/{JOB}/gallery").status_code == 401
        ok = c.get(f"/jobs/{JOB}/gallery", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["total"] == 2
