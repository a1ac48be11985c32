"""The gateway's own routes on the services' own protocol (`shared.serve.HttpProtocol`, as
`python -m gateway` runs): a raw `POST /upload` and a tus PATCH are spliced from the socket
(`gateway.intake.splice`), a multipart body and a PATCH with `Upload-Checksum` are not, and
one kept-alive connection carries them all. `splice_body` is wrapped to count its calls
(it still does the work)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import gateway.intake.receive as receive
import gateway.intake.tus_store as tus_store
from gateway.app import create_app
from shared.serve import HttpProtocol
from shared.storage import Storage
from tests.support.gateway import FAST, make_settings
from tests.support.images import zip_of_images
from tests.support.servers import ThreadServer
from tests.support.waiting import wait_for

TUS = {"Tus-Resumable": "1.0.0"}


FILES: list[bytes] = []
"""What each spliced file held when its splice returned (read back through /proc: ingest may
remove a `POST /upload` file soon after the answer)."""


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte counts `splice_body` was asked for, by either caller."""
    calls: list[int] = []
    real = receive.splice_body
    FILES.clear()

    async def counting(sock: int, fd: int, count: int, *rest: Any) -> int:
        calls.append(count)
        moved = await real(sock, fd, count, *rest)
        # the fd itself is write-only: read the file back through /proc
        FILES.append(await asyncio.to_thread(Path(f"/proc/self/fd/{fd}").read_bytes))
        return moved

    monkeypatch.setattr(receive, "splice_body", counting)
    monkeypatch.setattr(tus_store, "splice_body", counting)
    return calls


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[httpx.Client, Storage]]:
    data = tmp_path / "data"
    Storage(data).ensure_layout()
    settings = make_settings(data)
    with ThreadServer(create_app(settings, **FAST), http=HttpProtocol) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c, Storage(data)


def test_raw_upload_and_tus_patch_are_spliced_on_one_connection(
        client: tuple[httpx.Client, Storage], spliced: list[int]) -> None:
    c, storage = client
    archive = zip_of_images(["a.jpg", "b.jpg"])
    r = c.post("/upload?filename=set.zip", content=archive,
               headers={"content-type": "application/zip"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    wait_for(lambda: c.get(f"/status/{job}").json()["total"] == 2, 30, "the job's 2 tasks")
    assert spliced == []  # a few KiB: whole in the first read, nothing left to splice

    big = os.urandom(4 * 1024 * 1024 + 3)
    r = c.post("/upload?filename=big.zip", content=big,
               headers={"content-type": "application/zip"})
    assert r.status_code == 202, r.text
    assert len(spliced) == 1 and 0 < spliced[0] <= len(big)
    assert FILES[0] == big

    body = os.urandom(3 * 1024 * 1024 + 5)
    r = c.post("/files/", headers={**TUS, "Upload-Length": str(len(body)),
                                   "Upload-Metadata": "filename " + base64.b64encode(
                                       b"x.zip").decode()})
    assert r.status_code == 201, r.text
    where = r.headers["location"]
    half = len(body) // 2
    r = c.patch(where, content=body[:half], headers={
        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 204 and r.headers["upload-offset"] == str(half)
    digest = base64.b64encode(hashlib.sha1(body[half:]).digest()).decode()
    r = c.patch(where, content=body[half:], headers={  # a checksum: read the usual way
        **TUS, "Upload-Offset": str(half), "Content-Type": "application/offset+octet-stream",
        "Upload-Checksum": f"sha1 {digest}"})
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(body))
    assert storage.upload_path(where.rstrip("/").rsplit("/", 1)[1]).read_bytes() == body

    r = c.post("/upload", files={"file": ("m.zip", archive, "application/zip")})
    assert r.status_code == 202, r.text  # multipart: the parser reads it
    assert c.get("/health").status_code == 200
    assert len(spliced) == 2  # the big raw POST and the first PATCH, nothing else


def test_a_raw_upload_over_the_limit_is_413_before_any_splice(
        tmp_path: Path, spliced: list[int]) -> None:
    data = tmp_path / "data"
    Storage(data).ensure_layout()
    with ThreadServer(create_app(make_settings(data, max_upload_size=1000), **FAST),
                      http=HttpProtocol) as srv:
        r = httpx.post(f"{srv.url}/upload?filename=a.zip", content=b"z" * 5000,
                       headers={"content-type": "application/zip"}, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert spliced == []
    assert not any(p.is_file() for p in (data / "input").rglob("*"))
