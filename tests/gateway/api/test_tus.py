"""tus 1.0 under /files/ and POST /jobs, against the real gateway under uvicorn with SQLite:
a tuspy client cut off and resumed, a PATCH cut mid-body on a raw socket, checksums, offsets,
termination, expiry and the reconciler of finished uploads."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import sqlite3
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tusclient import client as tus_client

from gateway.db.tables import Upload
from shared.storage import Storage
from tests.support.gateway import Gateway, StageServer, make_settings, seed, sweep_expired_uploads
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


def noise_zip(path: Path, names: list[str], side: int) -> dict[str, bytes]:
    """A stored zip of random-noise PNGs (incompressible, so the upload has real size)."""
    rng = np.random.default_rng(7)
    members: dict[str, bytes] = {}
    for n in names:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        members[n] = buf.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return members


def meta(**kw: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kw.items())


def create(gw: Gateway, length: int, **metadata: str) -> str:
    r = gw.client.post("/files/", headers={**TUS, "Upload-Length": str(length),
                                           "Upload-Metadata": meta(**metadata)})
    assert r.status_code == 201, r.text
    assert r.headers["Tus-Resumable"] == "1.0.0" and r.headers["Upload-Expires"].endswith("GMT")
    loc = r.headers["Location"]
    assert loc.startswith("/files/")
    return loc.rsplit("/", 1)[-1]


def head_offset(gw: Gateway, upload_id: str) -> int:
    r = gw.client.head(f"/files/{upload_id}", headers=TUS)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    return int(r.headers["Upload-Offset"])


def test_tuspy_upload_cut_and_resumed_becomes_a_job_with_identical_images(
    start_gateway: Start, stage_server: StageServer, tmp_path: Path
) -> None:
    gw = start_gateway(stage_server.url)
    src = tmp_path / "photos.zip"
    members = noise_zip(src, ["a.png", "sub/b.png", "sub/c.png"], 200)
    size = src.stat().st_size
    assert size > 5 * 64 * 1024
    c = tus_client.TusClient(gw.url + "/files/")
    first = c.uploader(file_path=str(src), chunk_size=64 * 1024,
                       metadata={"filename": "photos.zip"})
    for _ in range(3):
        first.upload_chunk()
    assert first.url is not None
    upload_id = first.url.rsplit("/", 1)[-1]
    assert head_offset(gw, upload_id) == 3 * 64 * 1024
    # The first client is gone; a new one resumes from the server's offset, with checksums.
    second = c.uploader(file_path=str(src), url=first.url, chunk_size=64 * 1024,
                        upload_checksum=True)
    assert second.offset == 3 * 64 * 1024
    second.upload()
    assert head_offset(gw, upload_id) == size
    r = gw.client.post("/jobs", json={"upload_id": upload_id, "output": "rgba"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status_url"] == f"/status/{job['job_id']}"
    again = gw.client.post("/jobs", json={"upload_id": upload_id})
    assert again.status_code == 409 and job["job_id"] in again.json()["detail"]
    wait_for(lambda: gw.client.get(job["status_url"]).json()["state"]
             not in ("ingesting", "running"))
    status = gw.client.get(job["status_url"]).json()
    assert status["state"] == "completed" and status["total"] == 3, status
    chunks = gw.storage.job_chunks(job["job_id"])
    for name, data in members.items():
        assert (chunks / name).read_bytes() == data
    assert not gw.storage.upload_path(upload_id).exists()


def test_patch_cut_mid_body_keeps_what_reached_disk_and_resumes(
    start_gateway: Start, tmp_path: Path
) -> None:
    gw = start_gateway()
    src = tmp_path / "big.zip"
    members = noise_zip(src, ["x.png", "y.png"], 700)
    body = src.read_bytes()
    upload_id = create(gw, len(body), filename="big.zip")
    path = gw.storage.upload_path(upload_id)
    half = 3 * len(body) // 4
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall((f"PATCH /files/{upload_id} HTTP/1.1\r\nHost: x\r\n"
                      "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                      f"Upload-Offset: 0\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        sock.sendall(body[:half])
        wait_for(lambda: path.stat().st_size >= 1 << 20)  # some bytes are on disk
    offset = head_offset(gw, upload_id)
    assert offset == path.stat().st_size and (1 << 20) <= offset <= half
    assert path.read_bytes() == body[:offset]
    stale = gw.client.patch(f"/files/{upload_id}", headers={**PATCH, "Upload-Offset": "0"},
                            content=b"x")
    assert stale.status_code == 409 and stale.headers["Upload-Offset"] == str(offset)
    up = tus_client.TusClient(gw.url + "/files/").uploader(
        file_path=str(src), url=f"{gw.url}/files/{upload_id}", chunk_size=512 * 1024)
    assert up.offset == offset
    up.upload()
    assert path.read_bytes() == body
    r = gw.client.post("/jobs", json={"upload_id": upload_id})
    assert r.status_code == 202, r.text
    # Ingest unpacks the archive and then deletes it: compare what it unpacked.
    chunks = gw.storage.job_chunks(upload_id)
    wait_for(lambda: all((chunks / name).is_file() for name in members)
             and not (gw.storage.job_input(upload_id) / "upload.zip").exists())
    for name, data in members.items():
        assert (chunks / name).read_bytes() == data


def test_protocol_errors(start_gateway: Start) -> None:
    gw = start_gateway(max_upload_size=1000)
    c = gw.client
    opt = c.options("/files/")
    assert opt.status_code == 204 and opt.headers["Tus-Version"] == "1.0.0"
    assert opt.headers["Tus-Extension"] == "creation,termination,checksum,expiration"
    assert opt.headers["Tus-Checksum-Algorithm"] == "sha1" and opt.headers["Tus-Max-Size"] == "1000"
    r = c.post("/files/", headers={"Upload-Length": "10"})
    assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
    assert c.post("/files/", headers=TUS).status_code == 400  # no Upload-Length
    assert c.post("/files/", headers={**TUS, "Upload-Length": "1001"}).status_code == 413
    bad_meta = c.post("/files/", headers={**TUS, "Upload-Length": "5", "Upload-Metadata": "a !!"})
    assert bad_meta.status_code == 400
    assert c.post("/files/", headers={**TUS, "Upload-Length": "5",
                                      "Upload-Metadata": meta(filename="x.exe")}).status_code == 400
    uid = create(gw, 10, filename="one.png")
    url = f"/files/{uid}"
    assert c.patch(url, headers={**TUS, "Upload-Offset": "0"}, content=b"12").status_code == 415
    assert c.patch(url, headers={**PATCH, "Upload-Offset": "3"}, content=b"12").status_code == 409
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = c.patch(url, headers={**PATCH, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {wrong}"},
                content=b"hello")
    assert r.status_code == 460 and r.headers["Tus-Resumable"] == "1.0.0"
    assert head_offset(gw, uid) == 0 and gw.storage.upload_path(uid).stat().st_size == 0
    right = base64.b64encode(hashlib.sha1(b"hello").digest()).decode()
    r = c.patch(url, headers={**PATCH, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {right}"},
                content=b"hello")
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "5"
    assert c.patch(url, headers={**PATCH, "Upload-Offset": "5"}, content=b"123456").status_code \
        == 413
    assert head_offset(gw, uid) == 5
    not_done = c.post("/jobs", json={"upload_id": uid})
    assert not_done.status_code == 409 and "offset 5 of 10" in not_done.json()["detail"]
    assert c.post("/jobs", json={"upload_id": "0" * 32}).status_code == 404
    assert c.post("/jobs", json={"upload_id": uid, "output": "gif"}).status_code == 400
    assert c.head("/files/nothex", headers=TUS).status_code == 404
    d = c.delete(url, headers=TUS)
    assert d.status_code == 204 and d.headers["Tus-Resumable"] == "1.0.0"
    assert c.head(url, headers=TUS).status_code == 404
    assert not gw.storage.upload_path(uid).exists()


def test_expired_uploads_are_refused_then_swept(start_gateway: Start) -> None:
    gw = start_gateway()
    old, fresh = create(gw, 10, filename="a.png"), create(gw, 10, filename="b.png")
    r = gw.client.patch(f"/files/{old}", headers={**PATCH, "Upload-Offset": "0"}, content=b"abc")
    assert r.status_code == 204
    db = sqlite3.connect(gw.settings.data_dir / "mattepipe.db")
    with db:
        db.execute("UPDATE uploads SET expires_at = ? WHERE id = ?", (time.time() - 1, old))
    db.close()
    assert gw.client.head(f"/files/{old}", headers=TUS).status_code == 404

    assert sweep_expired_uploads(gw.settings) == 1
    assert not gw.storage.upload_path(old).exists()
    assert gw.storage.upload_path(fresh).exists() and head_offset(gw, fresh) == 0


def test_reconciler_makes_jobs_of_finished_autojob_uploads(
    start_gateway: Start, stage_server: StageServer, data_dir: Path, tmp_path: Path
) -> None:
    # As if a gateway died after the last byte hit the disk but before completed_at was written.
    settings = make_settings(data_dir, stage_server.url)
    storage = Storage(data_dir)
    src = tmp_path / "set.zip"
    members = noise_zip(src, ["p.png"], 40)
    uid = os.urandom(16).hex()
    storage.upload_path(uid).parent.mkdir(parents=True, exist_ok=True)
    storage.upload_path(uid).write_bytes(src.read_bytes())
    # And one that died between moving a finished file for POST /jobs and writing the job.
    moved = os.urandom(16).hex()
    (storage.job_input(moved)).mkdir(parents=True)
    (storage.job_input(moved) / "upload.zip").write_bytes(src.read_bytes())
    seed(settings, [], [])
    db = sqlite3.connect(data_dir / "mattepipe.db")
    with db:
        for row_id, done, metadata in ((uid, None, '{"autojob": "1", "output": "alpha"}'),
                                       (moved, time.time(), '{}')):
            db.execute(
                f"INSERT INTO {Upload.__tablename__} (id, length, filename, metadata_json,"
                " completed_at, created_at, expires_at) VALUES (?, ?, 'set.zip', ?, ?, ?, ?)",
                (row_id, src.stat().st_size, metadata, done, time.time(), time.time() + 3600),
            )
    db.close()
    gw = start_gateway(stage_server.url)
    wait_for(lambda: gw.client.get(f"/status/{uid}").status_code == 200
             and gw.client.get(f"/status/{uid}").json()["state"] == "completed")
    assert (storage.job_chunks(uid) / "p.png").read_bytes() == members["p.png"]
    assert gw.client.get(f"/jobs/{uid}/tasks").json()["tasks"][0]["state"] == "completed"
    assert gw.client.post("/jobs", json={"upload_id": uid}).status_code == 409
    assert storage.upload_path(moved).read_bytes() == src.read_bytes()
    assert head_offset(gw, moved) == src.stat().st_size
    assert gw.client.get(f"/status/{moved}").status_code == 404  # no autojob: waits for POST
    assert gw.client.post("/jobs", json={"upload_id": moved}).status_code == 202
