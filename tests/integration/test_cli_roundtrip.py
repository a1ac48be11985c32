"""`mattepipe run` against the real stack: a folder in, the result zip out; and an upload cut
in the middle and resumed by the CLI, after which the job's input images on the server are
byte-identical to the source files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mattepipe.cli.main import app
from mattepipe.client.resume import StateStore
from tests.support.images import photo_bytes
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

runner = CliRunner()
CHUNK = 16 * 1024


def photo_folder(root: Path) -> dict[str, bytes]:
    files = {
        "day1/coffee.jpg": photo_bytes("coffee.jpg", 240),
        "day1/rocket.jpg": photo_bytes("rocket.jpg", 240),
        "day2/deep/chelsea.jpg": photo_bytes("chelsea.jpg", 240),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".DS_Store").write_bytes(b"not an image, and hidden: never sent")
    return files


def invoke(stack: Stack, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"MATTEPIPE_SERVER": stack.url,
                                                 "COLUMNS": "200"})
    return result.exit_code, result.output


def test_run_a_folder_end_to_end(stack: Stack, tmp_path: Path) -> None:
    files = photo_folder(tmp_path / "shoot")
    out = tmp_path / "result.zip"
    code, output = invoke(stack, "run", str(tmp_path / "shoot"), "-o", str(out),
                          "--output", "both", "--state-dir", str(tmp_path / "state"))
    assert code == 0, output
    assert "3 completed, 0 failed, 0 rejected of 3" in output
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        report = json.loads(zf.read("report.json"))
    for rel in files:
        stem = rel.removesuffix(".jpg")
        assert {f"matting_output/{stem}.png", f"matting_output/{stem}.alpha.png",
                f"final_results/{stem}_compare.jpg"} <= names
    assert sorted(i["path"] for i in report["items"]) == sorted(files)
    assert list((tmp_path / "state").iterdir()) == []


def _has_tus(stack: Stack) -> bool:
    with stack.client() as c:
        r = c.options("/files/", headers={"Tus-Resumable": "1.0.0"})
        return r.status_code < 400 or c.post("/files/", headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": "0"}).status_code not in (404, 405)


def test_an_upload_cut_in_the_middle_resumes_and_the_images_arrive_intact(
        stack: Stack, tmp_path: Path) -> None:
    if not _has_tus(stack):
        pytest.skip("this gateway has no tus endpoint yet")
    files = photo_folder(tmp_path / "shoot")
    state = tmp_path / "state"
    args = ["run", str(tmp_path / "shoot"), "-o", str(tmp_path / "r.zip"), "--state-dir",
            str(state), "--chunk-size", str(CHUNK)]

    code, output = invoke(stack, *args, "--stop-after-bytes", str(CHUNK))
    assert code == 130, output
    (saved,) = StateStore(state).all()
    assert saved.tus_url and saved.job_id is None
    with httpx.Client(timeout=30) as c:
        head = c.head(saved.tus_url, headers={"Tus-Resumable": "1.0.0"})
    held = int(head.headers["Upload-Offset"])
    assert 0 < held < saved.size

    code, output = invoke(stack, *args)
    assert code == 0, output
    sent_line = next(ln for ln in output.splitlines() if "this time" in ln)
    sent = int(sent_line.split("sent ")[1].split(" bytes")[0])
    assert f"resumed at byte {held}" in sent_line
    assert sent == saved.size - held < saved.size
    job_id = sent_line.rsplit("job ", 1)[1].strip()

    chunks = stack.data_dir / "input" / job_id / "chunks"
    for rel, data in files.items():
        assert (chunks / rel).read_bytes() == data, rel
    assert not (chunks / ".DS_Store").exists()
    with zipfile.ZipFile(tmp_path / "r.zip") as zf:
        report = json.loads(zf.read("report.json"))
    assert report["summary"]["completed"] == len(files)
    assert StateStore(state).all() == []
