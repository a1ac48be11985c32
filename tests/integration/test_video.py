"""A video on the real stack: uploaded as .mp4, every frame matted and compared, the alpha
video and the contact sheet assembled when the job ends, all of it in the zip."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.support.stack import Stack
from tests.support.videos import video_bytes

pytestmark = pytest.mark.integration


def test_mp4_upload_round_trip(stack: Stack, tmp_path: Path) -> None:
    data = video_bytes(tmp_path, ".mp4", frames=12)
    with stack.client() as c:
        r = c.post("/upload", content=data, params={"filename": "walk.mp4", "model": "identity"},
                   headers={"Content-Type": "video/mp4"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed", st
        assert st["total"] == 12 and st["completed"] == 12
        r = c.get(job["download_url"])
        assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(zf.namelist())
    for i in range(12):
        cut = Image.open(io.BytesIO(zf.read(f"matting_output/walk/{i:06d}.png")))
        assert cut.mode == "RGBA" and cut.size == (64, 48)
        assert f"final_results/walk/{i:06d}_compare.jpg" in names
    assert {"matting_output/walk.webm", "final_results/walk_compare.jpg"} <= names
    webm = tmp_path / "out.webm"
    webm.write_bytes(zf.read("matting_output/walk.webm"))
    with av.open(str(webm)) as v:
        stream = v.streams.video[0]
        assert stream.average_rate == 10
        assert sum(1 for _ in v.decode(stream)) == 12
    items = {i["path"]: i for i in json.loads(zf.read("report.json"))["items"]}
    assert items["walk.mp4"]["state"] == "completed"
    assert items["walk.mp4"]["matting_output"] == "matting_output/walk.webm"
    assert len([p for p in items if p.startswith("walk/")]) == 12


def test_output_options_shape_the_frames_not_the_video(stack: Stack, tmp_path: Path) -> None:
    """With `format=webp&crop=…` the frames' cut-outs are cropped WebPs, while the alpha
    video is still the full frame: it is built from each frame's full-size matte."""
    data = video_bytes(tmp_path, ".mp4", frames=6)
    with stack.client() as c:
        r = c.post("/upload", content=data,
                   params={"filename": "clip.mp4", "model": "classical", "format": "webp",
                           "crop": "5"},
                   headers={"Content-Type": "video/mp4"})
        assert r.status_code == 202, r.text
        job = r.json()
        st = stack.wait_final(job["job_id"])
        assert st["state"] == "completed" and st["completed"] == 6, st
        r = c.get(job["download_url"])
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    cuts = [Image.open(io.BytesIO(zf.read(f"matting_output/clip/{i:06d}.webp")))
            for i in range(6)]
    assert all(c.format == "WEBP" for c in cuts)
    webm = tmp_path / "clip.webm"
    webm.write_bytes(zf.read("matting_output/clip.webm"))
    with av.open(str(webm)) as v:
        frames = list(v.decode(v.streams.video[0]))
    assert len(frames) == 6 and all((f.width, f.height) == (64, 48) for f in frames)
    items = {i["path"]: i for i in json.loads(zf.read("report.json"))["items"]}
    assert items["clip.mp4"]["state"] == "completed" and not items["clip.mp4"]["error"]
