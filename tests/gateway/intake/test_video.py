"""Videos at ingest: every frame a task (names, chunk files, the manifest), the limits, broken
files and name clashes — on real videos made with PyAV and real SQLite."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gateway.db.database import Database
from gateway.errors import BadRequest
from gateway.intake.receive import upload_extension
from gateway.intake.video import MANIFEST, frame_path, read_manifest
from shared.states import JobState, TaskState
from tests.gateway.intake.test_ingest import Env, archive_bytes, jpeg
from tests.support.videos import frame_pixels, video_bytes

FRAMES = [f"clip/{i:06d}.png" for i in range(12)]


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Env]]:
    (tmp_path / "data").mkdir()
    db = await Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'test.db'}")
    yield lambda **limits: Env(tmp_path, db, **limits)
    await db.close()


def test_video_suffixes_are_uploads() -> None:
    assert [upload_extension(n) for n in ("a.MP4", "b.mov", "c.webm", "d.mkv")] == [
        "mp4", "mov", "webm", "mkv"]
    with pytest.raises(BadRequest, match=r"\.mp4"):
        upload_extension("e.avi")


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
async def test_single_video_becomes_one_task_per_frame(
    any_env: Env, tmp_path: Path, suffix: str
) -> None:
    env = any_env  # on S3 too: the video is fetched to scratch, its frames become objects
    upload = await env.job("j", f"clip{suffix}", suffix[1:], video_bytes(tmp_path, suffix))
    job, tasks = await env.run("j")
    assert job.state == JobState.RUNNING and job.error is None
    assert sorted(tasks) == FRAMES and job.total == 12
    assert all(t.state == TaskState.PENDING for t in tasks.values())
    for i, name in enumerate(FRAMES):
        assert tasks[name].input == f"input/j/chunks/{name}"
        with Image.open(io.BytesIO(env.storage.objects.get(tasks[name].input))) as im:
            got = np.asarray(im.convert("RGB"), dtype=np.int16)
        assert im.size == (64, 48)
        # lossy codecs: each frame is nearest to the frame encoded at its place (order kept)
        dist = [np.abs(got - frame_pixels(j, 64, 48)).mean() for j in range(12)]
        assert int(np.argmin(dist)) == i
    line = json.loads(env.storage.objects.get(f"input/j/{MANIFEST}"))
    assert line == {"path": f"clip{suffix}", "frames": 12, "rate": "10", "width": 64,
                    "height": 48}
    assert [asdict(v) for v in read_manifest(env.storage, "j")] == [line]
    assert not upload.exists() and not env.storage.objects.exists(f"input/j/upload{suffix}")


async def test_video_inside_an_archive_next_to_images(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = make_env()
    members = [("shoot/clip.mov", video_bytes(tmp_path, ".mov")), ("shoot/a.jpg", jpeg(1)),
               ("shoot/clip/000003.png", jpeg(2))]  # a frame's name, taken: a duplicate
    await env.job("j", "set.zip", "zip", archive_bytes(tmp_path, "zip", members))
    job, tasks = await env.run("j")
    assert job.state == JobState.RUNNING
    assert job.total == 14  # 12 frames, the image, the refused duplicate (same path as frame 3)
    frames = [f"shoot/{f}" for f in FRAMES]
    assert sorted(tasks) == sorted([*frames, "shoot/a.jpg"])
    assert all(tasks[f].state == TaskState.PENDING for f in frames if not f.endswith("03.png"))
    # (the later row of that path, the archive's own file, is the refused one)
    assert tasks["shoot/clip/000003.png"].state == TaskState.REJECTED
    assert tasks["shoot/clip/000003.png"].error == "duplicate name"
    # the copy of the video is gone once decoded; the frames stay for the workers
    chunks = env.storage.job_chunks("j")
    assert not (chunks / "shoot/clip.mov").exists()
    assert (chunks / frame_path("shoot/clip.mov", 11)).is_file()


async def test_an_earlier_member_is_never_overwritten_by_a_frame(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = make_env()
    members = [("clip/000002.jpg", jpeg(1)), ("clip/000003.png", jpeg(2)),
               ("clip.mp4", video_bytes(tmp_path))]
    await env.job("j", "set.tar.gz", "tar.gz", archive_bytes(tmp_path, "tar.gz", members))
    _, tasks = await env.run("j")
    # clip/000002.jpg would share the output name of frame 2: the name check refuses one
    # of them; clip/000003.png is the file name of frame 3: the whole video is refused.
    assert tasks["clip.mp4"].state == TaskState.REJECTED
    assert "clashes with another file" in (tasks["clip.mp4"].error or "")
    assert not any(p.startswith("clip/0000") and p not in ("clip/000002.jpg", "clip/000003.png")
                   for p in tasks)
    kept = env.storage.job_chunks("j") / "clip/000003.png"
    assert kept.read_bytes() == jpeg(2)
    assert not (env.storage.job_chunks("j") / "clip/000000.png").exists()


async def test_a_video_claims_its_output_names(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    """`clip.jpg`'s comparison sheet would be the video's contact sheet: the later is refused."""
    env = make_env()
    members = [("clip.mp4", video_bytes(tmp_path)), ("clip.jpg", jpeg(1))]
    await env.job("j", "set.zip", "zip", archive_bytes(tmp_path, "zip", members))
    _, tasks = await env.run("j")
    assert tasks["clip.jpg"].state == TaskState.REJECTED
    assert "clip.mp4" in (tasks["clip.jpg"].error or "")
    members = [("clip.jpg", jpeg(1)), ("clip.mp4", video_bytes(tmp_path))]
    await env.job("k", "set.zip", "zip", archive_bytes(tmp_path, "zip", members))
    _, tasks = await env.run("k")
    assert tasks["clip.jpg"].state == TaskState.PENDING
    refused = {p: t for p, t in tasks.items() if p != "clip.jpg"}
    assert sorted(refused) == ["clip.mp4", *FRAMES]
    assert all(t.state == TaskState.REJECTED and "output name clash" in (t.error or "")
               for t in refused.values())
    assert not (env.storage.job_chunks("k") / "clip/000000.png").exists()
    assert not (env.storage.job_input("k") / MANIFEST).exists()


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_video_frames": 11}, "more than 11 frames (MAX_VIDEO_FRAMES)"),
        ({"max_video_pixels": 64 * 48 - 1}, "64x48 pixels (limit 3071; MAX_VIDEO_PIXELS)"),
        ({"max_video_seconds": 1.0}, "too long: 1.2 s (limit 1 s; MAX_VIDEO_SECONDS)"),
    ],
)
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
async def test_limits_reject_the_video_with_a_reason(
    make_env: Callable[..., Env], tmp_path: Path, limits: dict[str, Any], reason: str,
    suffix: str,
) -> None:  # fmt: skip
    env = make_env(**limits)
    await env.job("j", f"clip{suffix}", suffix[1:], video_bytes(tmp_path, suffix))
    job, tasks = await env.run("j")
    assert job.state == JobState.COMPLETED_WITH_ERRORS  # a rejected item, not a failed job
    assert list(tasks) == [f"clip{suffix}"]
    assert tasks[f"clip{suffix}"].state == TaskState.REJECTED
    assert reason in (tasks[f"clip{suffix}"].error or "")
    assert not any(env.storage.job_chunks("j").rglob("*.png"))


async def test_frame_limit_holds_while_decoding(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    """A WebM declares no frame count; one more frame than allowed is found while decoding,
    and the frames written before are removed."""
    env = make_env(max_video_frames=12)
    await env.job("j", "c.webm", "webm", video_bytes(tmp_path, ".webm", frames=12))
    _, tasks = await env.run("j")
    assert len(tasks) == 12
    # duration 1.3 s at 10 fps: the metadata says 13 frames, refused before decoding
    env2 = make_env(max_video_frames=12)
    await env2.job("k", "c.webm", "webm", video_bytes(tmp_path, ".webm", frames=13))
    _, tasks = await env2.run("k")
    assert [t.state for t in tasks.values()] == [TaskState.REJECTED]


@pytest.mark.parametrize("cut", ["garbage", "truncated", "empty-ish"])
async def test_broken_video_is_rejected(
    make_env: Callable[..., Env], tmp_path: Path, cut: str
) -> None:
    env = make_env()
    good = video_bytes(tmp_path, ".mp4")
    data = {"garbage": b"\x00\x01 not a video " * 200, "truncated": good[: len(good) // 3],
            "empty-ish": good[:40]}[cut]
    await env.job("j", "clip.mp4", "mp4", data)
    job, tasks = await env.run("j")
    assert job.state == JobState.COMPLETED_WITH_ERRORS
    assert [(p, t.state) for p, t in tasks.items()] == [("clip.mp4", TaskState.REJECTED)]
    error = tasks["clip.mp4"].error or ""
    assert error.startswith(("cannot read video", "video has no decodable frames")), error
    assert str(env.storage.root) not in error
