"""Intake on object storage (STORAGE_URL=s3://…) against a real S3 server (SeaweedFS, on
loopback: tests/support/seaweed.py) and the real gateway under uvicorn with SQLite: uploads
land as objects under `input/<job>/`, the local disk keeps no copy, a tus upload is one
multipart upload that survives a gateway restart, and every limit still holds."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import sqlite3
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient import client as tus_client

from gateway.app import create_app
from gateway.db import repo
from gateway.intake.tus_parts import object_key
from gateway.state import GatewayState
from shared.limits import MULTIPART_MIN_PART_BYTES, S3_MAX_OBJECT_BYTES, tus_part_bytes
from shared.settings import Settings
from shared.storage import Storage
from tests.gateway.api.test_tus import PATCH, TUS, create
from tests.support.gateway import FAST, Gateway, make_settings
from tests.support.images import noise_set, png_set
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_for

PART = MULTIPART_MIN_PART_BYTES

Start = Callable[..., Gateway]


@pytest.fixture
def on_s3(s3_settings: Settings) -> dict[str, Any]:
    """The settings that put a gateway's files on the test bucket (a fresh prefix)."""
    return {"storage_url": s3_settings.storage_url,
            "s3_endpoint_url": s3_settings.s3_endpoint_url}


@pytest.fixture
def gateway(start_gateway: Start, on_s3: dict[str, Any]) -> Gateway:
    gw = start_gateway(**on_s3)
    gw.storage = Storage.from_settings(gw.settings)
    return gw


@contextlib.contextmanager
def gateway_on(settings: Settings) -> Iterator[Gateway]:
    """A gateway that a test stops and starts again (the same DATA_DIR and bucket)."""
    with ThreadServer(create_app(settings, **FAST)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as client:
        yield Gateway(srv.url, settings, Storage.from_settings(settings), client)


def objects(storage: Storage, prefix: str) -> dict[str, bytes]:
    return {k: storage.objects.get(k) for k, _ in storage.objects.list(prefix)}


def tasks(gw: Gateway, job_id: str) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(gw.settings.data_dir / "mattepipe.db") as db:
        return sorted(db.execute("SELECT path, input, state, error FROM tasks WHERE job_id = ?",
                                 (job_id,)).fetchall())


def wait_ingested(gw: Gateway, job_id: str) -> dict[str, Any]:
    wait_for(lambda: gw.client.get(f"/status/{job_id}").json()["state"]
             not in ("uploading", "ingesting"), 120, "ingest")
    status: dict[str, Any] = gw.client.get(f"/status/{job_id}").json()
    return status


def local_files(gw: Gateway, area: str, job_id: str) -> list[Path]:
    folder = gw.settings.data_dir / area / job_id
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def assert_inputs_are_objects(gw: Gateway, job_id: str, members: dict[str, bytes]) -> None:
    """Every good member is the object its task names, byte for byte; nothing stays on the
    local disk, and the upload itself is gone once ingested."""
    rows = tasks(gw, job_id)
    # (the scheduler may already have taken some: no stage answers here, so any state but
    # rejected is a good member)
    good = {path: rel for path, rel, state, _ in rows if state != "rejected"}
    assert set(good) == set(members)
    for path, rel in good.items():
        assert rel == f"input/{job_id}/chunks/{path}"
        assert gw.storage.objects.get(rel) == members[path]
    stored = objects(gw.storage, f"input/{job_id}/")
    assert set(stored) == set(good.values())  # the upload object went after ingest
    assert local_files(gw, "input", job_id) == []


def head_offset(gw: Gateway, upload_id: str) -> int:
    r = gw.client.head(f"/files/{upload_id}", headers=TUS)
    assert r.status_code == 200, r.text
    return int(r.headers["Upload-Offset"])


def patch(gw: Gateway, upload_id: str, offset: int, body: bytes) -> httpx.Response:
    return gw.client.patch(f"/files/{upload_id}", content=body,
                           headers={**PATCH, "Upload-Offset": str(offset)})


# --- POST /upload -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_post_upload_lands_every_member_as_an_object(gateway: Gateway, kind: str) -> None:
    members = png_set(7)
    body = zip_of({**members, "bad.png": b"not a png"}) if kind == "zip" else \
        tar_of({**members, "bad.png": b"not a png"})
    r = gateway.client.post("/upload", files={"file": (f"set.{kind}", body)})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    status = wait_ingested(gateway, job_id)
    assert status["total"] == 8, status
    assert_inputs_are_objects(gateway, job_id, members)
    (bad,) = [t for t in tasks(gateway, job_id) if t[2] == "rejected"]
    assert bad[0] == "bad.png" and bad[3]  # a reason, as on the local disk


def test_bad_archive_is_refused_with_its_reason_and_leaves_nothing(gateway: Gateway) -> None:
    body = zip_of(png_set(3))[:-30]  # the end record cut off
    r = gateway.client.post("/upload", files={"file": ("cut.zip", body)})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    status = wait_ingested(gateway, job_id)
    assert status["state"] == "failed" and "corrupt" in status["error"], status
    assert objects(gateway.storage, f"input/{job_id}/") == {}
    assert local_files(gateway, "input", job_id) == []


def test_post_upload_free_space_is_checked_on_the_local_spool(
    start_gateway: Start, on_s3: dict[str, Any]
) -> None:
    """The body is spooled locally before it is stored: MIN_FREE_DISK guards that disk."""
    gw = start_gateway(**on_s3, min_free_disk=1 << 60)
    r = gw.client.post("/upload", files={"file": ("a.zip", zip_of(png_set(1)))})
    assert r.status_code == 507, r.text
    assert "disk space" in r.json()["detail"]


def test_post_upload_over_the_size_cap_is_refused(
    start_gateway: Start, on_s3: dict[str, Any]
) -> None:
    gw = start_gateway(**on_s3, max_upload_size=10_000)
    r = gw.client.post("/upload", files={"file": ("a.zip", zip_of(noise_set(1, 200)))})
    assert r.status_code == 413, r.text
    with sqlite3.connect(gw.settings.data_dir / "mattepipe.db") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert list(Storage.from_settings(gw.settings).objects.list("input/")) == []


def test_deleting_a_job_removes_its_objects(gateway: Gateway) -> None:
    r = gateway.client.post("/upload", files={"file": ("set.zip", zip_of(png_set(3)))})
    job_id = r.json()["job_id"]
    wait_ingested(gateway, job_id)
    # What the workers and the report would have written, in every area of the job.
    for key in (f"matting_output/{job_id}/set/part0/img000.png",
                f"final_results/{job_id}/set/part0/img000_compare.jpg",
                f"reports/{job_id}/report.json"):
        gateway.storage.objects.put(key, b"x")
    other = gateway.storage.objects
    other.put("input/someone-else/chunks/a.png", b"keep")
    assert gateway.client.delete(f"/jobs/{job_id}").status_code == 200
    for area in ("input", "matting_output", "final_results", "reports"):
        assert objects(gateway.storage, f"{area}/{job_id}/") == {}, area
    assert other.get("input/someone-else/chunks/a.png") == b"keep"


# --- tus --------------------------------------------------------------------------------------
def test_tus_patches_crossing_part_boundaries_become_one_multipart_object(
    gateway: Gateway,
) -> None:
    members = noise_set(8, 700)  # ~12 MiB that do not compress: three parts of 5 MiB
    body = tar_of(members)
    assert 2 * PART < len(body) < 3 * PART and tus_part_bytes(len(body)) == PART
    upload_id = create(gateway, len(body), filename="set.tar")
    step = 3 * 1024**2 + 17  # never a part's size: every PATCH leaves a tail
    offset = 0
    while offset < len(body):
        r = patch(gateway, upload_id, offset, body[offset:offset + step])
        assert r.status_code == 204, r.text
        offset = min(len(body), offset + step)
        assert r.headers["Upload-Offset"] == str(offset)
        assert head_offset(gateway, upload_id) == offset
    # Nothing of it is on the local disk; the finished upload is the job's object already.
    assert not (gateway.settings.data_dir / "uploads" / upload_id).exists()
    assert gateway.storage.objects.get(object_key(upload_id)) == body
    assert objects(gateway.storage, f"uploads/{upload_id}/") == {}  # no tail left
    r = gateway.client.post("/jobs", json={"upload_id": upload_id})
    assert r.status_code == 202, r.text
    status = wait_ingested(gateway, upload_id)  # read straight from the object (a tar stream)
    assert status["total"] == 8, status
    assert_inputs_are_objects(gateway, upload_id, members)


def test_tus_upload_resumes_on_a_restarted_gateway(
    data_dir: Path, on_s3: dict[str, Any], tmp_path: Path
) -> None:
    settings = make_settings(data_dir, **on_s3)
    members = noise_set(5, 700)
    body = zip_of(members)
    src = tmp_path / "set.zip"
    src.write_bytes(body)
    assert len(body) > PART + 1024**2
    with gateway_on(settings) as first:
        upload_id = create(first, len(body), filename="set.zip")
        cut = PART + 1024**2 + 5  # one whole part and a tail
        assert patch(first, upload_id, 0, body[:cut]).status_code == 204
    with gateway_on(settings) as second:  # a fresh process state: what S3 and the row hold
        assert head_offset(second, upload_id) == cut
        stale = patch(second, upload_id, 0, b"x")
        assert stale.status_code == 409 and stale.headers["Upload-Offset"] == str(cut)
        up = tus_client.TusClient(second.url + "/files/").uploader(
            file_path=str(src), url=f"{second.url}/files/{upload_id}", chunk_size=4 * 1024**2,
            upload_checksum=True)
        assert up.offset == cut
        up.upload()
        assert head_offset(second, upload_id) == len(body)
        r = second.client.post("/jobs", json={"upload_id": upload_id})
        assert r.status_code == 202, r.text
        status = wait_ingested(second, upload_id)  # a zip read through ranged GETs
        assert status["total"] == 5, status
        assert_inputs_are_objects(second, upload_id, members)


def test_tus_single_image_is_fetched_once_and_stored(gateway: Gateway) -> None:
    (data,) = png_set(1).values()
    upload_id = create(gateway, len(data), filename="photo.png")
    assert patch(gateway, upload_id, 0, data).status_code == 204
    assert gateway.client.post("/jobs", json={"upload_id": upload_id}).status_code == 202
    wait_ingested(gateway, upload_id)
    assert_inputs_are_objects(gateway, upload_id, {"photo.png": data})


def test_tus_oversize_is_refused_before_anything_is_stored(
    start_gateway: Start, on_s3: dict[str, Any]
) -> None:
    gw = start_gateway(**on_s3, max_upload_size=PART)
    gw.storage = Storage.from_settings(gw.settings)
    r = gw.client.post("/files/", headers={**TUS, "Upload-Length": str(PART + 1)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    big = start_gateway(**on_s3, max_upload_size=S3_MAX_OBJECT_BYTES * 2)
    r = big.client.post("/files/", headers={**TUS, "Upload-Length": str(S3_MAX_OBJECT_BYTES + 1)})
    assert r.status_code == 413 and str(S3_MAX_OBJECT_BYTES) in r.json()["detail"]
    assert big.client.options("/files/").headers["Tus-Max-Size"] == str(S3_MAX_OBJECT_BYTES)
    upload_id = create(gw, 1000, filename="a.zip")
    # A body past Upload-Length: refused up front by its Content-Length, and mid-stream when
    # it has none (chunked), with nothing of it counted.
    assert patch(gw, upload_id, 0, b"x" * 1001).status_code == 413

    def chunked() -> Iterator[bytes]:
        yield b"y" * 600
        yield b"y" * 600

    r = gw.client.patch(f"/files/{upload_id}", content=chunked(),
                        headers={**PATCH, "Upload-Offset": "0"})
    assert r.status_code == 413, r.text
    assert head_offset(gw, upload_id) == 0
    assert objects(gw.storage, f"uploads/{upload_id}/") == {}


def test_tus_quota_and_free_space_on_s3(start_gateway: Start, on_s3: dict[str, Any]) -> None:
    """The per-key declared-bytes cap holds as on disk; the local free-space check does not
    apply to tus bytes, which never touch the local disk on S3."""
    gw = start_gateway(**on_s3, max_open_upload_bytes=3000, min_free_disk=1 << 60)
    create(gw, 2000, filename="a.zip")
    r = gw.client.post("/files/", headers={**TUS, "Upload-Length": "2000"})
    assert r.status_code == 413 and "3000 allowed" in r.json()["detail"]


def test_tus_checksum_mismatch_and_termination(gateway: Gateway) -> None:
    body = bytes(range(256)) * (PART // 256 + 10)
    upload_id = create(gateway, len(body) * 2, filename="a.tar")
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    r = gateway.client.patch(f"/files/{upload_id}", content=body, headers={
        **PATCH, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {wrong}"})
    assert r.status_code == 460, r.text
    assert head_offset(gateway, upload_id) == 0  # the part sent is not counted
    assert patch(gateway, upload_id, 0, body).status_code == 204
    assert head_offset(gateway, upload_id) == len(body)
    assert objects(gateway.storage, f"uploads/{upload_id}/")  # the tail past part 1
    assert gateway.client.delete(f"/files/{upload_id}", headers=TUS).status_code == 204
    assert objects(gateway.storage, f"uploads/{upload_id}/") == {}
    assert objects(gateway.storage, f"input/{upload_id}/") == {}


def test_reconciler_completes_an_upload_whose_gateway_died_before_complete(
    data_dir: Path, on_s3: dict[str, Any]
) -> None:
    """Every part stored and recorded, the multipart upload never completed (the gateway died
    in between): the reconciler of any gateway completes it, and `autojob` makes the job."""
    settings = make_settings(data_dir, **on_s3)
    members = png_set(3)
    body = zip_of(members)
    with gateway_on(settings) as gw:
        upload_id = create(gw, len(body), filename="set.zip", autojob="1")

    async def die_then_reconcile() -> int:
        state = await GatewayState.open(settings)
        try:
            row = await state.tus.get_upload(upload_id)
            assert row.multipart_id is not None
            etag = await asyncio.to_thread(state.storage.objects.upload_part,
                                           object_key(upload_id), row.multipart_id, 1, body)
            async with state.db.write() as s:
                await repo.add_upload_parts(s, upload_id, 1, [etag])
            return await state.tus.reconcile_uploads()
        finally:
            await state.close()

    assert asyncio.run(die_then_reconcile()) == 1
    with gateway_on(settings) as gw:  # its start redoes the ingest the closed state cut off
        assert gw.client.get(f"/status/{upload_id}").status_code == 200
        wait_ingested(gw, upload_id)
        assert_inputs_are_objects(gw, upload_id, members)


def test_tus_body_past_the_length_counts_nothing_even_after_a_whole_part(
    gateway: Gateway,
) -> None:
    """As on the disk, a 413 mid-body keeps nothing of that body: the part stored and recorded
    before the overflow is struck off again, and the upload goes on from where it was."""
    body = (bytes(range(256)) * ((3 * PART + 1000) // 256 + 1))[:3 * PART + 1000]
    upload_id = create(gateway, len(body), filename="a.tar")

    def too_long() -> Iterator[bytes]:
        # part 1 is recorded once part 2 is sent, well before the overflow arrives
        yield from (body[i:i + 1024**2] for i in range(0, len(body), 1024**2))
        yield b"overflow"

    r = gateway.client.patch(f"/files/{upload_id}", content=too_long(),
                             headers={**PATCH, "Upload-Offset": "0"})
    assert r.status_code == 413, r.text
    assert head_offset(gateway, upload_id) == 0
    assert patch(gateway, upload_id, 0, body).status_code == 204
    assert gateway.storage.objects.get(object_key(upload_id)) == body
