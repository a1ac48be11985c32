"""A finished job's zip written once after its report and sent as a file (ZIP_STORE,
`gateway.results.stored_zip`): the same bytes as the zip made as it is sent, sent by the
kernel, resumable with HTTP ranges, never written without room, gone with its job."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.results.stored_zip import STORED_ZIP, has_room
from mattepipe.client.gateway import GatewayClient, GatewayError
from shared.serve import HttpProtocol
from tests.gateway.results.test_download import (
    IN_PROCESSES,
    finished_job,
    read_zip,
)
from tests.support.gateway import Gateway, StageServer, seed
from tests.support.servers import CuttingProxy, count_sendfile
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
STORED: dict[str, Any] = {"zip_store": True, "http": HttpProtocol}
"""A gateway that stores finished jobs' zips, on the services' own protocol (which sends a
file with `os.sendfile`: `shared.serve.PATHSEND`)."""


def stored_zip(gw: Gateway, job_id: str = "j1") -> Path:
    path = gw.storage.job_reports(job_id) / STORED_ZIP
    wait_for(path.is_file, 30, "the stored zip")
    return path


@pytest.mark.parametrize("made", [{}, IN_PROCESSES], ids=["in a thread", "in processes"])
def test_the_stored_zip_is_the_zip_a_download_streams_and_is_sent_whole(
        start_gateway: Start, stage_server: StageServer, made: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent = count_sendfile(monkeypatch)
    streaming = start_gateway(stage_server.url, **made)  # ZIP_STORE off: made as it is sent
    finished_job(streaming, output="both")
    streamed = streaming.client.get("/download/j1")
    assert "accept-ranges" not in streamed.headers
    left = streaming.storage.job_reports("j1") / f".{STORED_ZIP}.999999.tmp"
    left.write_bytes(b"the start of a zip whose writer crashed")
    gw = start_gateway(stage_server.url, **STORED, **made)  # the same DATA_DIR and database
    path = stored_zip(gw)
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    for _ in range(2):  # the second on the same kept-alive connection
        r = gw.client.get("/download/j1")
        assert r.status_code == 200
        assert r.content == streamed.content == path.read_bytes()
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["content-type"] == "application/zip"
        assert r.headers["content-disposition"] == 'attachment; filename="j1.zip"'
        assert int(r.headers["content-length"]) == len(r.content)
    assert sum(sent) == 2 * len(streamed.content)  # every byte by the kernel
    assert len(read_zip(r).namelist()) == 9 + 3


def test_a_cut_download_resumes_with_a_range(start_gateway: Start,
                                               stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, **STORED)
    finished_job(gw)
    whole = stored_zip(gw).read_bytes()
    first = gw.client.get("/download/j1")
    etag = first.headers["etag"]
    cut = len(whole) // 3
    r = gw.client.get("/download/j1", headers={"Range": f"bytes={cut}-", "If-Range": etag})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
    assert whole[:cut] + r.content == whole
    r = gw.client.get("/download/j1", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == whole[:100]
    # a validator of another file: the whole zip again, never a range of something else
    r = gw.client.get("/download/j1", headers={"Range": f"bytes={cut}-",
                                                "If-Range": '"another-version"'})
    assert r.status_code == 200 and r.content == whole
    r = gw.client.get("/download/j1", headers={"Range": f"bytes={len(whole)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(whole)}"
    assert r.json() == {"detail": f"range not satisfiable: the zip has {len(whole)} bytes"}
    for bad in ("lines=1-2", "bytes=", "bytes=9-3", "bytes=a-b"):
        r = gw.client.get("/download/j1", headers={"Range": bad})
        assert r.status_code == 400, bad
        assert r.json()["detail"].startswith("bad Range header: "), r.text
    assert gw.client.get("/download/j1").content == whole  # nothing changed by the above


def test_without_room_the_zip_is_not_stored_and_downloads_are_made_as_sent(
        start_gateway: Start, stage_server: StageServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.results.stored_zip")
    gw = start_gateway(stage_server.url, **STORED, zip_store_keep_free=1.0)
    finished_job(gw)
    wait_for(lambda: any("not stored (no room" in r.getMessage() for r in caplog.records),
             30, "the zip pass to give up")
    folder = gw.storage.job_reports("j1")
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "report.csv",
                                                         "report.json"]
    r = gw.client.get("/download/j1")
    assert r.status_code == 200 and "accept-ranges" not in r.headers
    assert len(read_zip(r).namelist()) == 6 + 3
    r = gw.client.get("/download/j1", headers={"Range": "bytes=10-"})
    assert r.status_code == 200  # no range of a zip made as it is sent: the whole of it


def test_has_room_keeps_the_share_of_the_disk_free(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    assert has_room(tmp_path, 0, 0.0)
    assert not has_room(tmp_path, free + 1, 0.0)
    assert has_room(tmp_path, free // 2, 0.0)
    assert not has_room(tmp_path, 0, min(1.0, free / total + 0.01))


def test_a_file_gone_before_its_zip_is_stored_leaves_no_zip(
        start_gateway: Start, stage_server: StageServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """The zip pass makes the zip with every check of a download: a completed task's file
    gone since fails it, and nothing is left behind; downloads stay as they were (short of
    their length). The file back, the pass after the retry delay stores it."""
    caplog.set_level(logging.INFO, "gateway.results.stored_zip")
    streaming = start_gateway(stage_server.url)
    finished_job(streaming)
    sheet = streaming.storage.resolve(streaming.storage.compare_rel("j1", "top.jpg"))
    body = sheet.read_bytes()
    sheet.unlink()
    gw = start_gateway(stage_server.url, **STORED)
    wait_for(lambda: any("storing the zip of job j1 failed" in r.getMessage()
                         for r in caplog.records), 30, "the zip pass to fail")
    folder = gw.storage.job_reports("j1")
    assert STORED_ZIP not in {p.name for p in folder.iterdir()}
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    sheet.write_bytes(body)
    r = gw.client.get("/download/j1")
    assert r.status_code == 200 and "accept-ranges" not in r.headers
    read_zip(r)


def test_deleting_the_job_removes_its_stored_zip(start_gateway: Start,
                                                 stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url, **STORED)
    finished_job(gw)
    path = stored_zip(gw)
    assert gw.client.delete("/jobs/j1").status_code == 200
    assert not path.exists() and not path.parent.exists()
    assert gw.client.get("/download/j1").status_code == 410  # cancelled, its files gone


def test_a_download_in_flight_keeps_its_file_when_the_job_is_deleted(
        start_gateway: Start) -> None:
    """The open file is sent whole even if the job goes meanwhile (a zip of 24 MiB, more
    than the sockets hold: most of it is sent after the delete); the next download is 410."""
    gw = start_gateway(**STORED)
    big_job(gw, "j5")
    whole = stored_zip(gw, "j5").read_bytes()
    got = bytearray()
    with gw.client.stream("GET", "/download/j5") as r:
        for chunk in r.iter_raw(64 * 1024):
            if not got:
                assert gw.client.delete("/jobs/j5").status_code == 200
                assert not gw.storage.job_reports("j5").exists()
            got += chunk
    assert len(got) == len(whole) and bytes(got) == whole
    assert gw.client.get("/download/j5").status_code == 410


def big_job(gw: Gateway, job_id: str, files: int = 3, size: int = 8 << 20) -> None:
    """A finished job of `files` cut-outs of `size` random bytes (rows without recorded
    sizes: each file is sized by `stat`)."""
    rows = []
    for i in range(files):
        path = f"big{i}.png"
        gw.storage.objects.put(gw.storage.matting_rel(job_id, path), os.urandom(size))
        rows.append({"job_id": job_id, "path": path, "state": "completed"})
    seed(gw.settings, [{"id": job_id, "state": "completed", "total": files, "output": "rgba"}],
         rows)


def test_the_client_resumes_a_cut_download_of_a_stored_zip(
        start_gateway: Start, tmp_path: Path) -> None:
    """Through a proxy that cuts the first two connections 5 MiB into the answer: the
    client's download resumes twice with a range and its file is the stored zip, byte for
    byte; progress never goes back."""
    gw = start_gateway(**STORED)
    big_job(gw, "j6")
    whole = stored_zip(gw, "j6").read_bytes()
    seen: list[int] = []
    with CuttingProxy(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), 5 << 20, 2) as proxy, \
            GatewayClient(proxy.url) as client:
        client.download("j6", tmp_path / "out.zip", lambda done, _total: seen.append(done))
        assert proxy.cut == 2
    assert (tmp_path / "out.zip").read_bytes() == whole
    assert seen == sorted(seen) and seen[-1] == len(whole)
    assert not list(tmp_path.glob(".*.part"))  # the temporary name is gone


def test_a_cut_download_of_a_zip_made_as_sent_is_an_error(start_gateway: Start,
                                                          tmp_path: Path) -> None:
    """No stored zip, no range: the cut is the client's error, and no file is left."""
    gw = start_gateway(zip_store=False)
    big_job(gw, "j7")
    with CuttingProxy(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), 5 << 20, 1) as proxy, \
            GatewayClient(proxy.url) as client, pytest.raises(GatewayError, match="broke off"):
        client.download("j7", tmp_path / "out" / "j7.zip")
    assert list((tmp_path / "out").iterdir()) == []
