"""Tenants on the real gateway under uvicorn: two keys (API_KEYS) and an ADMIN_KEY, real
uploads that run to the end through a stage server, a real SQLite file. Each tenant sees,
downloads and cancels only its own jobs and tus uploads; another tenant's id answers exactly
like an unknown one; quotas count per key; the keys never reach the database or the logs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.__main__ import exposure_warning, is_loopback
from shared.keys import key_hash
from tests.support.gateway import Gateway, StageServer, make_settings
from tests.support.images import zip_of_images
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
KEY_A = "tenant-a-7f3c9e1d"
KEY_B = "tenant-b-52aa08c4"
ADMIN = "admin-0d1e2f3a4b"
KEYS = {"api_keys": f"a:{KEY_A},b:{KEY_B}", "admin_key": ADMIN}
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}
ROOT = Path(__file__).resolve().parents[3]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}



def upload(gw: Gateway, key: str, names: list[str] | None = None) -> httpx.Response:
    return gw.client.post("/upload?filename=set.zip", content=zip_of_images(names or ["x.jpg"]),
                          headers={"Content-Type": "application/zip", **auth(key)})


def finished_job(gw: Gateway, key: str, names: list[str]) -> str:
    r = upload(gw, key, names)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    wait_for(lambda: gw.client.get(f"/status/{job_id}", headers=auth(key)).json()["state"]
             == "completed", what=f"job {job_id} completes")
    return job_id


def same_as_unknown(gw: Gateway, method: str, path: str, real_id: str, key: str,
                    **kw: Any) -> httpx.Response:
    """`path` names another tenant's `real_id`: the answer must be the very 404 that a
    never-seen id of the same shape gets (only the id in the detail differs)."""
    r = gw.client.request(method, path.format(id=real_id), headers={**kw.pop("headers", {}),
                          **auth(key)}, **kw)
    fake = uuid.uuid4().hex
    u = gw.client.request(method, path.format(id=fake), headers=r.request.headers, **kw)
    assert r.status_code == 404 == u.status_code, (path, r.status_code, r.text)
    assert r.text.replace(real_id, fake) == u.text, (path, r.text, u.text)
    return r


@pytest.fixture
def two_jobs(start_gateway: Start, stage_server: StageServer) -> tuple[Gateway, str, str]:
    gw = start_gateway(stage_server.url, **KEYS)
    return gw, finished_job(gw, KEY_A, ["a1.jpg"]), finished_job(gw, KEY_B, ["b1.jpg", "b2.jpg"])


def test_each_tenant_lists_only_its_own_jobs_and_the_admin_sees_both(
    two_jobs: tuple[Gateway, str, str],
) -> None:
    gw, a, b = two_jobs
    for key, mine in ((KEY_A, [a]), (KEY_B, [b]), (ADMIN, [b, a])):
        doc = gw.client.get("/jobs", headers=auth(key)).json()
        assert [j["job_id"] for j in doc["jobs"]] == mine, key
        assert doc["total"] == len(mine)
    assert gw.client.get(f"/status/{b}", headers=auth(ADMIN)).json()["total"] == 2


def test_another_tenants_job_answers_like_an_unknown_one_and_stays_whole(
    two_jobs: tuple[Gateway, str, str],
) -> None:
    gw, _a, b = two_jobs
    rows = gw.client.get(f"/jobs/{b}/gallery", headers=auth(KEY_B)).json()["tasks"]
    sheet = rows[0]["sheet"]
    assert gw.client.get(sheet, headers=auth(KEY_B)).status_code == 200
    file_path = sheet.split(f"/jobs/{b}/files/", 1)[1]
    for method, path in [("GET", "/status/{id}"), ("GET", "/download/{id}"),
                         ("GET", "/jobs/{id}/tasks"), ("GET", "/jobs/{id}/gallery"),
                         ("GET", "/jobs/{id}/files/" + file_path), ("DELETE", "/jobs/{id}")]:
        r = same_as_unknown(gw, method, path, b, KEY_A)
        assert "tasks" not in r.json() and "b1.jpg" not in r.text
    # B's job is untouched by A's DELETE: still completed, files and download intact.
    s = gw.client.get(f"/status/{b}", headers=auth(KEY_B)).json()
    assert s["state"] == "completed" and s["completed"] == 2
    z = gw.client.get(f"/download/{b}", headers=auth(KEY_B))
    assert z.status_code == 200
    names = set(zipfile.ZipFile(io.BytesIO(z.content)).namelist())
    assert {"matting_output/b1.png", "final_results/b2_compare.jpg"} <= names
    assert gw.client.get(sheet, headers=auth(KEY_B)).status_code == 200


def test_the_admin_may_cancel_any_job_and_its_tenant_sees_that(
    two_jobs: tuple[Gateway, str, str],
) -> None:
    gw, a, b = two_jobs
    assert gw.client.delete(f"/jobs/{a}", headers=auth(KEY_B)).status_code == 404
    r = gw.client.delete(f"/jobs/{b}", headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert gw.client.get(f"/status/{b}", headers=auth(KEY_B)).json()["state"] == "cancelled"
    assert gw.client.get(f"/status/{a}", headers=auth(KEY_A)).json()["state"] == "completed"


def test_a_tus_upload_answers_only_to_its_key(start_gateway: Start,
                                              stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, **KEYS)
    body = zip_of_images(["t1.jpg", "t2.jpg"])
    half = len(body) // 2
    r = gw.client.post("/files/", headers={**TUS, **auth(KEY_A), "Upload-Length": str(len(body)),
                                           "Upload-Metadata": "filename dC56aXA="})  # t.zip
    assert r.status_code == 201, r.text
    uid = r.headers["Location"].rsplit("/", 1)[-1]
    r = gw.client.patch(f"/files/{uid}", content=body[:half],
                        headers={**PATCH, **auth(KEY_A), "Upload-Offset": "0"})
    assert r.status_code == 204
    # B can neither read its offset, append to it, delete it nor make it a job.
    same_as_unknown(gw, "HEAD", "/files/{id}", uid, KEY_B, headers=TUS)
    same_as_unknown(gw, "PATCH", "/files/{id}", uid, KEY_B, content=body[half:],
                    headers={**PATCH, "Upload-Offset": str(half)})
    same_as_unknown(gw, "DELETE", "/files/{id}", uid, KEY_B, headers=TUS)
    r = gw.client.post("/jobs", json={"upload_id": uid}, headers=auth(KEY_B))
    assert r.status_code == 404 and r.json() == {"detail": f"unknown or expired upload {uid!r}"}
    # A's upload is as A left it, and becomes A's job.
    r = gw.client.head(f"/files/{uid}", headers={**TUS, **auth(KEY_A)})
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(half)
    r = gw.client.patch(f"/files/{uid}", content=body[half:],
                        headers={**PATCH, **auth(KEY_A), "Upload-Offset": str(half)})
    assert r.status_code == 204
    assert gw.client.post("/jobs", json={"upload_id": uid}, headers=auth(KEY_B)).status_code == 404
    r = gw.client.post("/jobs", json={"upload_id": uid}, headers=auth(KEY_A))
    assert r.status_code == 202, r.text
    assert [j["job_id"] for j in gw.client.get("/jobs", headers=auth(KEY_A)).json()["jobs"]] \
        == [uid]
    assert gw.client.get("/jobs", headers=auth(KEY_B)).json()["total"] == 0


def test_one_tenant_at_its_concurrent_limit_does_not_block_another(start_gateway: Start) -> None:
    # No stage answers (port 9): every job stays running and holds its key's slot.
    gw = start_gateway(max_concurrent_jobs=1, **KEYS)
    assert upload(gw, KEY_A).status_code == 202
    r = upload(gw, KEY_A)
    assert r.status_code == 429 and "1 allowed per key" in r.json()["detail"]
    assert upload(gw, KEY_B).status_code == 202
    assert upload(gw, KEY_B).status_code == 429
    assert upload(gw, ADMIN).status_code == 202  # the admin's own jobs are its own key's


def test_wrong_and_near_keys_are_refused(start_gateway: Start) -> None:
    gw = start_gateway(**KEYS)
    for bad in (KEY_A[:-1], KEY_A + "x", KEY_A.upper(), f"a:{KEY_A}", "a", "ümlaut-key"):
        r = gw.client.get("/jobs", headers={"Authorization": f"Bearer {bad}".encode()})
        assert r.status_code == 401, bad
        assert "API key" in r.json()["detail"]
    assert gw.client.get("/jobs").status_code == 401
    assert gw.client.get("/jobs", headers={"Authorization": "Bearer"}).status_code == 401


def test_the_api_key_alone_is_still_one_tenant_and_its_rows_keep_the_same_hash(
    start_gateway: Start,
) -> None:
    gw = start_gateway(api_key="k3y", max_concurrent_jobs=0)
    job = upload(gw, "k3y").json()["job_id"]
    assert gw.client.get("/jobs", headers=auth("k3y")).json()["jobs"][0]["job_id"] == job
    assert gw.settings.key_table.labels == ["default"]
    assert gw.settings.key_table.tenants[0].key_hash == key_hash("k3y")


def test_no_key_is_stored_in_clear(two_jobs: tuple[Gateway, str, str]) -> None:
    gw, a, b = two_jobs
    import sqlite3

    db = sqlite3.connect(gw.settings.data_dir / "mattepipe.db")
    rows = dict(db.execute("SELECT id, api_key_hash FROM jobs").fetchall())
    db.close()
    assert rows == {a: key_hash(KEY_A), b: key_hash(KEY_B)}
    for f in gw.settings.data_dir.rglob("*"):  # database, WAL, logs, outputs
        if f.is_file():
            data = f.read_bytes()
            for key in (KEY_A, KEY_B, ADMIN):
                assert key.encode() not in data, f


# --- the start: an open gateway beyond loopback warns; bad keys stop it -------------------
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("gateway.example", False),
])
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_open_gateway_warning_is_decided_by_host_and_keys(tmp_path: Path) -> None:
    open_ = make_settings(tmp_path)
    assert exposure_warning("127.0.0.1", open_) is None
    msg = exposure_warning("0.0.0.0", open_)
    assert msg is not None and "NO API KEY" in msg and "0.0.0.0" in msg
    for keyed in ({"api_key": "k"}, {"api_keys": "a:k"}, {"admin_key": "k"}):
        assert exposure_warning("0.0.0.0", make_settings(tmp_path, **keyed)) is None


def run_main(tmp_path: Path, host: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway`'s `main` as a process, with the server itself left out (`serve` does
    nothing), so a wildcard host is decided on and logged but never bound."""
    code = ("import sys, gateway.__main__ as m; m.serve = lambda *a: None; "
            "m.main(sys.argv[1:])")
    full = {**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data"),
            "API_KEY": "", "API_KEYS": "", "API_KEYS_FILE": "", "ADMIN_KEY": "", **env}
    return subprocess.run([sys.executable, "-c", code, "--host", host, "--port", "9"],
                          cwd=tmp_path, env=full, capture_output=True, text=True, timeout=120)


def test_python_m_gateway_warns_when_open_beyond_loopback(tmp_path: Path) -> None:
    r = run_main(tmp_path, "0.0.0.0")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "NO API KEY" in r.stderr
    assert "NO API KEY" not in run_main(tmp_path, "127.0.0.1").stderr
    assert "NO API KEY" not in run_main(tmp_path, "0.0.0.0", API_KEYS=f"a:{KEY_A}").stderr


def test_python_m_gateway_refuses_malformed_keys_without_echoing_them(tmp_path: Path) -> None:
    r = run_main(tmp_path, "127.0.0.1", API_KEYS=f"a:{KEY_A},{KEY_B}")
    assert r.returncode != 0
    assert "API_KEYS: entry 2 is not 'label:key'" in r.stderr
    assert KEY_A not in r.stderr and KEY_B not in r.stderr


def test_python_m_gateway_warns_without_an_internal_token(tmp_path: Path) -> None:
    """Without INTERNAL_TOKEN every stage call is refused (401) and tasks wait for ever: the
    gateway says so at start instead of leaving the operator to wonder."""
    r = run_main(tmp_path, "127.0.0.1", INTERNAL_TOKEN="")
    assert r.returncode == 0, r.stderr
    assert "WARNING" in r.stderr and "INTERNAL_TOKEN is not set" in r.stderr
    assert "INTERNAL_TOKEN" not in run_main(tmp_path, "127.0.0.1", INTERNAL_TOKEN="t").stderr
