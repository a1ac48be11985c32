"""The result zip, read back with zipfile."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.results.zip_processes import ProcessZip
from shared.serve import HttpProtocol
from tests.support.gateway import Gateway, StageServer, image_tasks, seed
from tests.support.waiting import wait_for

Start = Callable[..., Gateway]
PATHS = ["top.jpg", "a/b/deep.jpg", "a/other.jpg"]


def finished_job(gw: Gateway, output: str = "rgba") -> None:
    rows = image_tasks(gw.storage, "j1", PATHS)
    rows[1]["gt"] = rows[1]["input"]
    rows.append({"job_id": "j1", "path": "broken.jpg", "state": "rejected",
                 "error": "not an image: cannot identify image file"})
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 4, "output": output}], rows)
    wait_for(lambda: gw.client.get("/status/j1").json()["state"] != "running")


def read_zip(r: object) -> zipfile.ZipFile:
    body = r.content  # type: ignore[attr-defined]
    zf = zipfile.ZipFile(io.BytesIO(body))
    assert zf.testzip() is None  # every member's CRC checks out
    return zf


def test_zip_of_a_finished_job(start_gateway: Start, stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    finished_job(gw)
    r = gw.client.get("/download/j1")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="j1.zip"'
    assert int(r.headers["content-length"]) == len(r.content)
    zf = read_zip(r)
    assert sorted(zf.namelist()) == sorted([
        "matting_output/top.png", "matting_output/a/b/deep.png", "matting_output/a/other.png",
        "final_results/top_compare.jpg", "final_results/a/b/deep_compare.jpg",
        "final_results/a/other_compare.jpg", "report.json", "report.csv", "index.html",
    ])
    on_disk = gw.storage.resolve(gw.storage.matting_rel("j1", "a/b/deep.jpg")).read_bytes()
    assert zf.read("matting_output/a/b/deep.png") == on_disk
    report = json.loads(zf.read("report.json"))
    assert report["job_id"] == "j1"
    items = {i["path"]: i for i in report["items"]}
    assert items["broken.jpg"]["state"] == "rejected" and "not an image" in items[
        "broken.jpg"]["error"]
    assert items["a/b/deep.jpg"]["metrics"] == {"sad": 0.5, "mse": 0.01}
    assert b"broken.jpg" in zf.read("report.csv")
    assert b"a/b/deep.jpg" in zf.read("index.html")


def test_both_outputs_and_missing_files_are_skipped(
    start_gateway: Start, stage_server: StageServer
) -> None:
    gw = start_gateway(stage_server.url)
    # top.jpg's comparison fails for good: its sheet is missing, its cut-outs are there (a
    # failed task has no recorded sizes: its files are sized by `stat`). A file removed after
    # its task completed fails the download instead (`test_a_completed_task_s_file_...`).
    stage_server.by_input["top.jpg"] = ["ok", "fatal"]
    finished_job(gw, output="both")
    assert not gw.storage.resolve(gw.storage.compare_rel("j1", "top.jpg")).exists()
    zf = read_zip(gw.client.get("/download/j1"))
    names = set(zf.namelist())
    assert "matting_output/a/other.alpha.png" in names
    assert "final_results/top_compare.jpg" not in names
    assert "matting_output/top.png" in names
    assert len(json.loads(zf.read("report.json"))["items"]) == 4


def test_running_job_needs_partial(start_gateway: Start) -> None:
    gw = start_gateway()  # no stage listens: the job stays running
    rows = image_tasks(gw.storage, "j1", PATHS, next_attempt_at=time.time() + 3600)
    seed(gw.settings, [{"id": "j1", "state": "running", "total": 3}], rows)
    done = gw.storage.resolve(gw.storage.matting_rel("j1", "top.jpg"))
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_bytes(b"\x89PNG fake but present")
    r = gw.client.get("/download/j1")
    assert r.status_code == 409
    assert r.json()["detail"] == "job is still running; use ?partial=1"
    r = gw.client.get("/download/j1?partial=1")
    assert r.status_code == 200
    zf = read_zip(r)
    assert set(zf.namelist()) == {"matting_output/top.png", "report.json", "report.csv",
                                  "index.html"}
    assert [i["state"] for i in json.loads(zf.read("report.json"))["items"]] == ["pending"] * 3


def test_report_is_written_once_when_the_job_ends_and_served_from_disk(
    start_gateway: Start, stage_server: StageServer
) -> None:
    gw = start_gateway(stage_server.url)
    finished_job(gw)
    folder = gw.storage.job_reports("j1")
    # the maintenance pass writes it, no download needed
    wait_for(lambda: all((folder / n).is_file() for n in ("report.json", "report.csv",
                                                           "index.html")))
    marked = (folder / "report.csv").read_bytes() + b'"written once",\n'
    (folder / "report.csv").write_bytes(marked)
    for _ in range(2):  # every download serves the file as written, nothing is rebuilt
        zf = read_zip(gw.client.get("/download/j1"))
        assert zf.read("report.csv") == marked
        assert zf.read("report.json") == (folder / "report.json").read_bytes()


def test_a_job_finished_without_its_report_gets_it_on_the_next_pass(
    start_gateway: Start,
) -> None:
    """As after a restart between the job's end and its report: the next pass writes it."""
    gw0 = start_gateway()
    rows = image_tasks(gw0.storage, "j2", ["x.jpg"], state="completed")
    seed(gw0.settings, [{"id": "j2", "state": "completed", "total": 1, "finished_at": 1.0}],
         rows)
    folder = gw0.storage.job_reports("j2")
    wait_for(lambda: (folder / "index.html").is_file())
    doc = json.loads((folder / "report.json").read_bytes())
    assert [i["path"] for i in doc["items"]] == ["x.jpg"]


def test_partial_download_leaves_no_temporary_report(start_gateway: Start) -> None:
    gw = start_gateway()
    rows = image_tasks(gw.storage, "j3", PATHS, next_attempt_at=time.time() + 3600)
    seed(gw.settings, [{"id": "j3", "state": "running", "total": 3}], rows)
    zf = read_zip(gw.client.get("/download/j3?partial=1"))
    assert len(json.loads(zf.read("report.json"))["items"]) == 3
    folder = gw.storage.job_reports("j3")
    wait_for(lambda: not folder.exists() or not any(folder.iterdir()))
    assert not (folder / "report.json").exists()  # a running job has no final report yet


def test_a_job_of_several_pages_streams_whole_with_its_length(
        start_gateway: Start, stage_server: StageServer) -> None:
    """1 203 rows (three pages of PAGE_ROWS): the zip is sized in one walk of the rows and
    sent in a second, its pages read from the event loop by the streaming thread; every
    member is there once and the body is exactly Content-Length."""
    from gateway.results.pages import PAGE_ROWS

    gw = start_gateway(stage_server.url)
    n = 2 * PAGE_ROWS + 203
    rows = []
    for i in range(n):
        path = f"d{i // 400}/img{i:04d}.png"
        gw.storage.objects.put(gw.storage.matting_rel("j9", path), b"cut " + path.encode())
        gw.storage.objects.put(gw.storage.compare_rel("j9", path), b"sheet " + path.encode())
        rows.append({"job_id": "j9", "path": path, "state": "completed"})
    seed(gw.settings, [{"id": "j9", "state": "completed", "total": n, "output": "rgba"}], rows)
    r = gw.client.get("/download/j9")
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == len(r.content)
    zf = read_zip(r)
    names = zf.namelist()
    assert len(names) == len(set(names)) == 2 * n + 3
    assert zf.read("final_results/d3/img1202_compare.jpg") == b"sheet d3/img1202.png"
    assert len(json.loads(zf.read("report.json"))["items"]) == n


# --- the zip sized from the rows' recorded sizes (issue 17, README "The download, third pass")
def _short_download(gw: Gateway) -> None:
    """The download starts (200, its Content-Length) and stops short of that length: the
    client sees an incomplete body, never a complete zip of other contents."""
    with gw.client.stream("GET", "/download/j1") as r:
        assert r.status_code == 200
        length = int(r.headers["content-length"])
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                got += len(chunk)
        assert got < length


def test_a_completed_task_s_sizes_are_recorded_and_size_the_zip(
        start_gateway: Start, stage_server: StageServer) -> None:
    gw = start_gateway(stage_server.url)
    finished_job(gw, output="both")
    with sqlite3.connect(gw.settings.data_dir / "mattepipe.db") as con:
        rows = dict(((p, (f, b, n)) for p, f, b, n in con.execute(
            "SELECT path, output_files, output_bytes, output_name_bytes FROM tasks")))
    cut = gw.storage.resolve(gw.storage.matting_rel("j1", "a/b/deep.jpg"))
    alpha = cut.with_name("deep.alpha.png")
    sheet = gw.storage.resolve(gw.storage.compare_rel("j1", "a/b/deep.jpg"))
    names = ["matting_output/a/b/deep.png", "matting_output/a/b/deep.alpha.png",
             "final_results/a/b/deep_compare.jpg"]
    assert rows["a/b/deep.jpg"] == (3, sum(p.stat().st_size for p in (cut, alpha, sheet)),
                                    sum(len(n.encode()) for n in names))
    assert rows["broken.jpg"] == (None, None, None)  # rejected: no outputs
    r = gw.client.get("/download/j1")
    assert int(r.headers["content-length"]) == len(r.content)
    assert len(read_zip(r).namelist()) == 9 + 3


IN_PROCESSES: dict[str, Any] = {"zip_processes": 2, "zip_process_min_members": 0}
"""A gateway that makes every finished job's zip in worker processes
(`gateway.results.zip_processes`); by default only a zip of ZIP_PROCESS_MIN_MEMBERS does."""
SPLICED: dict[str, Any] = {**IN_PROCESSES, "http": HttpProtocol}
"""…on the services' own protocol, which lends the socket: the processes' parts spliced into
it (`shared.serve.SendTap`)."""
MADE = pytest.mark.parametrize("made", [{}, IN_PROCESSES, SPLICED],
                               ids=["in a thread", "in processes", "spliced"])


def test_a_zip_made_by_processes_has_the_members_and_length_of_one_made_in_a_thread(
        start_gateway: Start, stage_server: StageServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spliced: list[int] = []
    splice_into = ProcessZip.splice_into

    def counted(self: ProcessZip, sock: int, stop: threading.Event) -> int:
        spliced.append(sock)
        return splice_into(self, sock, stop)

    monkeypatch.setattr(ProcessZip, "splice_into", counted)
    gw = start_gateway(stage_server.url)
    finished_job(gw, output="both")
    one = gw.client.get("/download/j1")

    def members(zf: zipfile.ZipFile) -> list[tuple[str, int, bytes]]:
        return sorted((i.filename, i.header_offset, zf.read(i)) for i in zf.infolist())

    for made in (IN_PROCESSES, SPLICED):
        gw2 = start_gateway(stage_server.url, **made)  # the same DATA_DIR and database
        for _ in range(2):  # the second on the same kept-alive connection
            r = gw2.client.get("/download/j1")
            assert r.status_code == 200
            assert int(r.headers["content-length"]) == len(r.content) == len(one.content)
            assert members(read_zip(r)) == members(read_zip(one))
            assert len(read_zip(r).namelist()) == 9 + 3
        assert gw2.client.get("/status/j1").status_code == 200
        assert len(spliced) == (2 if made is SPLICED else 0)  # the socket lent, or not


@MADE
def test_a_completed_task_s_file_changed_since_fails_the_download_short_of_its_length(
        start_gateway: Start, stage_server: StageServer, made: dict[str, Any]) -> None:
    gw = start_gateway(stage_server.url, **made)
    finished_job(gw)
    cut = gw.storage.resolve(gw.storage.matting_rel("j1", "a/other.jpg"))
    cut.write_bytes(cut.read_bytes() + b"grown")  # a byte count the zip did not announce
    _short_download(gw)
    cut.write_bytes(cut.read_bytes()[:-5])  # back to its size: whole again
    r = gw.client.get("/download/j1")
    assert int(r.headers["content-length"]) == len(r.content)
    read_zip(r)


@MADE
def test_a_completed_task_s_file_gone_or_a_symlink_fails_the_download(
        start_gateway: Start, stage_server: StageServer, tmp_path: Path,
        made: dict[str, Any]) -> None:
    gw = start_gateway(stage_server.url, **made)
    finished_job(gw)
    sheet = gw.storage.resolve(gw.storage.compare_rel("j1", "top.jpg"))
    body = sheet.read_bytes()
    sheet.unlink()
    _short_download(gw)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(body)  # the same size: only the symlink differs
    sheet.symlink_to(outside)
    _short_download(gw)  # never followed into the zip
    sheet.unlink()
    os.mkfifo(sheet)  # a FIFO without a writer: not a file, and never waited on
    _short_download(gw)


def test_sizes_recorded_after_retries_are_those_of_the_files_sent(
        start_gateway: Start, stage_server: StageServer) -> None:
    """A task retried at either stage is measured once, when it completes: its record is its
    files as they are then (the cache's reused cut-outs: tests/gateway/pipeline/
    test_result_cache.py downloads them through the same records)."""
    gw = start_gateway(stage_server.url)
    stage_server.by_input["other.jpg"] = ["retryable", "ok", "retryable", "ok"]
    finished_job(gw)
    with sqlite3.connect(gw.settings.data_dir / "mattepipe.db") as con:
        got = con.execute("SELECT retry_count, output_files, output_bytes FROM tasks "
                          "WHERE path = 'a/other.jpg'").fetchone()
    cut = gw.storage.resolve(gw.storage.matting_rel("j1", "a/other.jpg"))
    sheet = gw.storage.resolve(gw.storage.compare_rel("j1", "a/other.jpg"))
    assert got == (2, 2, cut.stat().st_size + sheet.stat().st_size)
    r = gw.client.get("/download/j1")
    assert int(r.headers["content-length"]) == len(r.content)
    read_zip(r)
