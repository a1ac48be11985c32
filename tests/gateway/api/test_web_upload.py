"""The page's upload client in headless Chromium: tus chunks, retry after a network error,
resume after a reload, and the zip writer (ZIP64 included) read back by Python's zipfile.

The tus side is a small stand-in server that keeps to tus 1.0 (POST → 201 Location, HEAD →
Upload-Offset, PATCH at the right offset → 204) and records what it was sent, so the client's
behaviour can be checked byte for byte, independent of the gateway's own tus router.
"""

from __future__ import annotations

import base64
import io
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from gateway.api import web
from tests.support.browser import browser, page  # noqa: F401  (fixtures)
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@dataclass
class TusServer:
    url: str = ""
    files: dict[str, bytearray] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, int]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()
        app.include_router(web.router)  # the real page and script
        tus = {"Tus-Resumable": "1.0.0"}

        @app.post("/files/")
        async def create(request: Request) -> Response:
            uid = uuid.uuid4().hex
            self.files[uid] = bytearray()
            self.lengths[uid] = int(request.headers["Upload-Length"])
            meta = dict(kv.split(" ") for kv in request.headers["Upload-Metadata"].split(","))
            assert base64.b64decode(meta["filename"])
            self.log.append(("POST", 0))
            return Response(status_code=201, headers={"Location": f"/files/{uid}", **tus})

        @app.head("/files/{uid}")
        async def head(uid: str) -> Response:
            if uid not in self.files:
                return Response(status_code=404)
            self.log.append(("HEAD", len(self.files[uid])))
            return Response(headers={"Upload-Offset": str(len(self.files[uid])),
                                     "Upload-Length": str(self.lengths[uid]), **tus})

        @app.patch("/files/{uid}")
        async def patch(uid: str, request: Request) -> Response:
            assert request.headers["Content-Type"] == "application/offset+octet-stream"
            offset = int(request.headers["Upload-Offset"])
            if offset != len(self.files[uid]):
                return Response(status_code=409)
            body = await request.body()
            self.files[uid] += body
            self.log.append(("PATCH", offset))
            return Response(status_code=204,
                            headers={"Upload-Offset": str(len(self.files[uid])), **tus})

        @app.post("/jobs", status_code=202)
        async def job(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.jobs.append(body)
            return {"job_id": f"job{len(self.jobs)}", "status_url": "", "download_url": ""}

        @app.get("/jobs")
        async def jobs() -> dict[str, Any]:
            return {"total": 0, "limit": 50, "offset": 0, "jobs": []}

        @app.get("/models")
        async def models() -> dict[str, Any]:
            return {"default": "classical",
                    "models": [{"name": "classical", "kind": "builtin"},
                               {"name": "identity", "kind": "builtin"}]}

        return app


@pytest.fixture
def tus() -> Iterator[TusServer]:
    srv = TusServer()
    with ThreadServer(srv.app()) as t:
        srv.url = t.url
        yield srv


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(20 * MIB + 12345)  # three 8 MiB chunks, the last one short
    f = tmp_path / "big archive.zip"
    f.write_bytes(data)
    return f, data


def started(pg: Any) -> None:
    pg.wait_for_function("document.getElementById('upload-status').textContent"
                         ".includes('started')", timeout=60_000)


def test_chunks_and_a_network_error(tus: TusServer, big_file: tuple[Path, bytes],
                                    page: Any) -> None:  # noqa: F811
    f, data = big_file
    patches = {"n": 0}

    def flaky(route: Any) -> None:
        patches["n"] += route.request.method == "PATCH"
        if route.request.method == "PATCH" and patches["n"] == 2:
            route.abort("connectionreset")  # the second chunk never arrives
        else:
            route.continue_()

    page.route("**/files/*", flaky)
    page.goto(tus.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    page.select_option("#model", "identity")
    page.select_option("#output", "alpha")
    page.set_input_files("#file-input", str(f))
    page.click("#start")
    started(page)
    (uid,) = tus.files
    assert bytes(tus.files[uid]) == data
    offsets = [o for m, o in tus.log if m == "PATCH"]
    assert offsets == [0, 8 * MIB, 16 * MIB]
    assert ("HEAD", 8 * MIB) in tus.log  # it asked where to go on after the error
    assert tus.jobs == [{"upload_id": uid, "model": "identity", "output": "alpha"}]
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('mattepipe.tus:'))"
                         ".length") == 0


def test_output_options_reach_the_job(tus: TusServer, tmp_path: Path,
                                      page: Any) -> None:  # noqa: F811
    """The form's format, max size, background and crop go into `POST /jobs` as set."""
    f = tmp_path / "one.zip"
    f.write_bytes(os.urandom(1000))
    page.goto(tus.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    page.select_option("#format", "webp")
    page.fill("#max-size", "64")
    page.fill("#background", "#ffffff")
    page.fill("#crop", "5")
    page.set_input_files("#file-input", str(f))
    page.click("#start")
    started(page)
    (uid,) = tus.files
    assert tus.jobs == [{"upload_id": uid, "model": "classical", "output": "rgba",
                         "format": "webp", "max_size": "64", "background": "#ffffff",
                         "crop": "5"}]


def test_a_reload_resumes_where_the_server_stands(tus: TusServer, big_file: tuple[Path, bytes],
                                                  page: Any) -> None:  # noqa: F811
    f, data = big_file
    page.route("**/files/*", lambda r: r.abort("failed") if r.request.method == "PATCH"
               and r.request.headers.get("upload-offset") == str(8 * MIB) else r.continue_())
    page.goto(tus.url + "/")
    page.set_input_files("#file-input", str(f))
    page.click("#start")
    page.wait_for_function("document.getElementById('upload-status').textContent"
                           ".includes('retrying')", timeout=30_000)
    (uid,) = tus.files
    assert len(tus.files[uid]) == 8 * MIB
    page.unroute("**/files/*")
    page.reload()  # a closed tab, a crash: the upload URL is in localStorage
    page.set_input_files("#file-input", str(f))
    page.click("#start")
    started(page)
    assert list(tus.files) == [uid]  # no second upload was created
    assert bytes(tus.files[uid]) == data
    assert [m for m, _ in tus.log].count("POST") == 1
    assert [o for m, o in tus.log if m == "PATCH"] == [0, 8 * MIB, 16 * MIB]


ZIP_JS = """async ([n, big, force64]) => {
  const files = [];
  for (let i = 0; i < n; i++) {
    files.push({name: "d/" + (i % 7) + "/f" + i + ".txt",
                file: new File(["x".repeat(i % 5) + i], "f" + i, {lastModified: 1700000000000})});
  }
  files.push({name: "ünïcode name #1.png", file: new File([new Uint8Array(big)], "u")});
  const blob = await window.mattepipe.packZip(files, () => {}, force64);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let s = ""; for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192)); }
  return btoa(s);
}"""


@pytest.mark.parametrize(("n", "force64"), [(5, False), (5, True), (400, False)])
def test_zip_writer_reads_back(tus: TusServer, page: Any, n: int,  # noqa: F811
                               force64: bool) -> None:
    """ZIP64 (past 4 GiB or 65 535 entries) is forced on a small archive: same records."""
    page.goto(tus.url + "/")
    raw = base64.b64decode(page.evaluate(ZIP_JS, [n, 3000, force64]))
    assert (b"PK\x06\x06" in raw[-200:]) == force64  # the ZIP64 end record
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert zf.testzip() is None  # every CRC checks
        infos = zf.infolist()
        assert len(infos) == n + 1
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert zf.read("d/3/f3.txt") == b"xxx3"
        assert zf.read(f"d/{(n - 1) % 7}/f{n - 1}.txt") == (
            b"x" * ((n - 1) % 5) + str(n - 1).encode())
        assert zf.read("ünïcode name #1.png") == bytes(3000)
        assert infos[0].date_time[0] >= 2023
