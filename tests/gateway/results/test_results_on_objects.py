"""The gateway's results side on S3 (a real SeaweedFS): the zip's members come from objects
(sized, every byte right, large ones streamed in ranged reads), the report files are written
once as objects and found by another gateway, output files are served from objects, and a
deleted job's objects go. The same zip built from a local store has the same members."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.report_memory import seed_rows
from gateway.api.web import job_file
from gateway.db.database import Database
from gateway.db.tables import Job, Task
from gateway.results import members
from gateway.results.job_report import Reports, report_key
from gateway.results.members import ObjectFile
from gateway.results.report import REPORT_FILES
from gateway.results.zip_stream import build_zip, zip_chunks
from shared.storage import Storage


def _lay_out(st: Storage, big: bytes) -> list[Task]:
    """Two finished images' cut-outs and sheets, as the workers leave them."""
    tasks = []
    for path in ("a/one.jpg", "two.png"):
        st.objects.put(st.matting_rel("j", path), f"cut {path}".encode())
        st.objects.put(st.compare_rel("j", path), f"sheet {path}".encode())
        tasks.append(Task(job_id="j", path=path, state="completed",
                          metrics={"m": {"sad": 1.0, "mse": 0.1, "grad": 1.0, "conn": 1.0}}))
    st.objects.put(st.matting_rel("j", "big.png"), big)
    tasks.append(Task(job_id="j", path="big.png", state="completed"))
    tasks.append(Task(job_id="j", path="gone.png", state="failed", error="worker said no"))
    st.objects.put("matting_output/j2/two.png", b"another job's")  # never in j's zip
    return tasks


def _zip_of(st: Storage, tasks: list[Task]) -> tuple[zipfile.ZipFile, int | None]:
    jz = build_zip(st, "j", "rgba", tasks, models=["m"])
    body = b"".join(zip_chunks(jz))
    assert jz.size is None or jz.size == len(body)  # sized from the listing, and exact
    return zipfile.ZipFile(io.BytesIO(body)), jz.size


def test_zip_streams_every_object(s3_storage: Storage, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(members, "STREAM_ABOVE_BYTES", 64 * 1024)  # big.png: ranged reads
    big = bytes(range(256)) * 1024 + b"end"
    tasks = _lay_out(s3_storage, big)
    zf, size = _zip_of(s3_storage, tasks)
    assert size is not None
    assert zf.read("matting_output/a/one.png") == b"cut a/one.jpg"
    assert zf.read("final_results/two_compare.jpg") == b"sheet two.png"
    assert zf.read("matting_output/big.png") == big
    local = Storage(tmp_path / "local")
    lzf, _ = _zip_of(local, _lay_out(local, big))
    assert sorted(zf.namelist()) == sorted(lzf.namelist())
    report = json.loads(zf.read("report.json"))
    assert [i["matting_output"] for i in report["items"]] == [
        "matting_output/a/one.png", "matting_output/two.png", "matting_output/big.png", None]
    assert zf.testzip() is None


def test_a_member_gone_mid_download_breaks_the_stream(s3_storage: Storage) -> None:
    """A sized zip cannot carry a hole: an object deleted after the listing ends the
    download with an error, not with a zip that lies."""
    tasks = _lay_out(s3_storage, b"x")
    jz = build_zip(s3_storage, "j", "rgba", tasks, models=["m"])
    s3_storage.objects.delete(s3_storage.compare_rel("j", "two.png"))
    with pytest.raises(FileNotFoundError):
        b"".join(zip_chunks(jz))


async def test_report_files_are_objects_any_gateway_finds(s3_storage: Storage,
                                                          tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}"
    seed_rows(url, "job", 300)
    db = await Database.connect(url)
    try:
        async with db.read() as s:
            job = await s.get(Job, "job")
        assert job is not None
        files = await Reports(db, s3_storage).files(job)
        assert [name for _, name in files] == list(REPORT_FILES)
        assert all(isinstance(m, ObjectFile) for m, _ in files)
        doc = json.loads(s3_storage.objects.get(report_key("job", "report.json")))
        assert doc["summary"]["items"] == 300
        # Nothing of the report stays in the gateway's own DATA_DIR.
        assert [p for p in (s3_storage.root / "reports").rglob("*") if p.is_file()] == []
        # Another gateway (a Reports of its own) serves the objects as they are.
        stamp = s3_storage.objects.get(report_key("job", "report.csv"))
        again = await Reports(db, Storage(tmp_path / "other", s3_storage.objects)).files(job)
        assert again == files
        assert s3_storage.objects.get(report_key("job", "report.csv")) == stamp
    finally:
        await db.close()


def test_output_files_are_served_from_objects(s3_storage: Storage) -> None:
    from fastapi import HTTPException

    _lay_out(s3_storage, b"x")
    assert job_file(s3_storage, "j", "final_results/a/one_compare.jpg") == (
        "final_results/j/a/one_compare.jpg")
    for bad in ("final_results/none.jpg", "final_results/../j2/two.png", "reports/report.json",
                "matting_output/a//one.png", "input/j/x.jpg"):
        with pytest.raises(HTTPException) as info:
            job_file(s3_storage, "j", bad)
        assert info.value.status_code == 404


def test_removing_a_job_removes_its_objects_only(s3_storage: Storage) -> None:
    _lay_out(s3_storage, b"x")
    s3_storage.objects.put("input/j/a/one.jpg", b"in")
    s3_storage.objects.put("reports/j/report.json", b"{}")
    s3_storage.remove_job("j")
    assert [k for k, _ in s3_storage.objects.list("")] == ["matting_output/j2/two.png"]


def test_videos_are_assembled_from_objects(s3_storage: Storage, tmp_path: Path) -> None:
    """A job's video on S3: frames, cut-outs and frame sheets are objects; the WebM with alpha
    and the contact sheet are written as objects and go into the zip; nothing stays in the
    gateway's DATA_DIR."""
    from gateway.intake.video import frame_path
    from gateway.results.video import assemble_videos, webm_rel
    from tests.gateway.results.test_video_outputs import (
        INFO,
        N,
        alpha_of,
        decode_alpha_video,
        lay_out,
    )

    staging = Storage(tmp_path / "staging")
    lay_out(staging, "j", INFO, missing=(3,))
    for f in sorted(p for p in staging.root.rglob("*") if p.is_file()):
        s3_storage.objects.put_file(staging.relative(f), f)
    assert assemble_videos(s3_storage, "j") == 1
    assert assemble_videos(s3_storage, "j") == 0  # done once: both objects exist
    tasks = [Task(job_id="j", path=frame_path(INFO.path, i), input="",
                  state="failed" if i == 3 else "completed") for i in range(N)]
    zf, _ = _zip_of(s3_storage, tasks)
    webm = tmp_path / "walk.webm"
    webm.write_bytes(zf.read("matting_output/clips/walk.webm"))
    assert webm.read_bytes() == s3_storage.objects.get(webm_rel(s3_storage, "j", INFO))
    frames, _, _ = decode_alpha_video(webm)
    assert len(frames) == N
    assert frames[3][..., 3].max() < 16
    assert np.abs(frames[5][..., 3].astype(int) - alpha_of(5)).mean() < 8
    assert "final_results/clips/walk_compare.jpg" in zf.namelist()
    assert [p for p in s3_storage.root.rglob("*") if p.is_file()] == []
