"""A job's videos put back together: the WebM with alpha (decoded back with PyAV), the contact
sheet, and both in the zip and the report — on files laid out as the stages write them."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from gateway.db.tables import Task
from gateway.intake.video import MANIFEST, VideoInfo, frame_path
from gateway.results.video import (
    ALPHA_PIX_FMT,
    assemble_videos,
    sample_frames,
    webm_rel,
)
from gateway.results.zip_stream import build_zip
from shared.storage import Storage
from tests.support.videos import frame_pixels

W, H, N = 64, 48, 12
INFO = VideoInfo("clips/walk.mp4", N, "10", W, H)


def alpha_of(i: int) -> npt.NDArray[np.uint8]:
    """Frame i's matte: the moving red square (as frame_pixels draws it) opaque."""
    a = np.zeros((H, W), np.uint8)
    x = (4 * i) % (W - 16)
    a[10:26, x:x + 16] = 255
    return a


def lay_out(storage: Storage, job: str, info: VideoInfo, missing: tuple[int, ...] = ()) -> None:
    """What ingest, matting and comparison leave: manifest, frames, cut-outs, frame sheets."""
    storage.job_input(job).mkdir(parents=True, exist_ok=True)
    (storage.job_input(job) / MANIFEST).write_text(info.to_line())
    for i in range(info.frames):
        name = frame_path(info.path, i)
        rgb = frame_pixels(i, W, H)
        src = storage.job_chunks(job) / name
        src.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(src)
        if i in missing:
            continue
        cut = storage.resolve(storage.matting_rel(job, name))
        cut.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.dstack([rgb, alpha_of(i)]), "RGBA").save(cut)
        sheet = storage.resolve(storage.compare_rel(job, name))
        sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.hstack([rgb, rgb])).save(sheet, "JPEG")


def decode_alpha_video(path: Path) -> tuple[list[npt.NDArray[np.uint8]], str, object]:
    """Every frame as RGBA through libvpx (FFmpeg's own vp9 decoder drops the alpha plane)."""
    frames, fmt = [], ""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = stream.average_rate
        dec = av.CodecContext.create("libvpx-vp9", "r")
        for packet in c.demux(stream):
            if packet.size == 0:
                continue
            for f in dec.decode(packet):
                fmt = f.format.name
                frames.append(f.to_ndarray(format="rgba"))
        frames.extend(f.to_ndarray(format="rgba") for f in dec.decode(None))
    return frames, fmt, rate


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "data")
    s.ensure_layout()
    return s


def test_webm_has_every_frame_the_rate_and_the_alpha(storage: Storage) -> None:
    lay_out(storage, "j", INFO)
    assert assemble_videos(storage, "j") == 1
    webm = storage.resolve(webm_rel(storage, "j", INFO))
    assert webm == storage.root / "matting_output/j/clips/walk.webm"
    frames, fmt, rate = decode_alpha_video(webm)
    assert len(frames) == N and fmt == ALPHA_PIX_FMT and rate == 10
    for i, f in enumerate(frames):
        err = np.abs(f[..., 3].astype(int) - alpha_of(i)).mean()
        assert err < 8, (i, err)  # lossy, but the matte is the cut-out's
    assert assemble_videos(storage, "j") == 0  # done once


def test_a_failed_frame_is_transparent_and_the_report_says_so(storage: Storage) -> None:
    lay_out(storage, "j", INFO, missing=(3,))
    assemble_videos(storage, "j")
    frames, _, _ = decode_alpha_video(storage.resolve(webm_rel(storage, "j", INFO)))
    assert len(frames) == N
    assert frames[3][..., 3].max() < 16 and frames[4][..., 3].max() > 200
    tasks = [Task(job_id="j", path=frame_path(INFO.path, i), input="",
                  state="failed" if i == 3 else "completed") for i in range(N)]
    z = build_zip(storage, "j", "rgba", tasks)
    zf = zipfile.ZipFile(io.BytesIO(b"".join(z.stream)))
    items = {i["path"]: i for i in json.loads(zf.read("report.json"))["items"]}
    video = items["clips/walk.mp4"]
    assert video["state"] == "completed"
    assert video["error"] == "1 of 12 frames failed (fully transparent in the video)"
    assert video["matting_output"] == "matting_output/clips/walk.webm"
    assert video["compare_output"] == "final_results/clips/walk_compare.jpg"
    assert items["clips/walk/000003.png"]["state"] == "failed"


def test_zip_holds_frames_video_and_contact_sheet(storage: Storage) -> None:
    lay_out(storage, "j", INFO)
    assemble_videos(storage, "j")
    tasks = [Task(job_id="j", path=frame_path(INFO.path, i), input="", state="completed")
             for i in range(N)]
    z = build_zip(storage, "j", "rgba", tasks)
    zf = zipfile.ZipFile(io.BytesIO(b"".join(z.stream)))
    names = set(zf.namelist())
    assert {f"matting_output/clips/walk/{i:06d}.png" for i in range(N)} <= names
    assert {"matting_output/clips/walk.webm", "final_results/clips/walk_compare.jpg"} <= names
    sheet = Image.open(io.BytesIO(zf.read("final_results/clips/walk_compare.jpg")))
    assert sheet.format == "JPEG"
    # 12 frames in rows of 3 tiles, each tile a frame's own (2-wide) sheet scaled to 480
    assert sheet.size == (3 * 480, 4 * round(480 * H / (2 * W)))
    report = json.loads(zf.read("report.json"))
    assert report["summary"]["items"] == N + 1


def test_contact_sheet_samples_evenly() -> None:
    assert sample_frames(5) == [0, 1, 2, 3, 4]
    picks = sample_frames(1000)
    assert len(picks) == 12 and picks[0] == 0 and picks[-1] == 999
    assert max(np.diff(picks)) - min(np.diff(picks)) <= 1


def test_a_video_without_cutouts_still_assembles_as_transparent(storage: Storage) -> None:
    lay_out(storage, "j", INFO, missing=tuple(range(N)))
    assert assemble_videos(storage, "j") == 1
    frames, _, _ = decode_alpha_video(storage.resolve(webm_rel(storage, "j", INFO)))
    assert len(frames) == N and all(f[..., 3].max() < 16 for f in frames)
