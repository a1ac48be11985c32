"""A finished job's videos put back together: the cut-out as a VP9 video with alpha, and a
contact sheet of sampled frames; both go into the zip, and the report lists each video.

When: once the job has ended (completed/completed_with_errors), before its report is written
(`gateway.results.job_report.Reports`), in a worker thread; a restart or a download that comes
first does the same, and a video whose two files exist is not redone. Each frame's cut-out is
read in order and encoded at once (libvpx-vp9, yuva420p, the input's frame rate), so memory is
that of one frame whatever the video's length.

A frame without a cut-out (its task failed) becomes a fully transparent frame: the video keeps
its length and timing, and a missing frame shows as missing rather than as a copy of the one
before it; the report's video item says how many. Names (README, "Video"): the video
`matting_output/<path without extension>.webm`, the sheet
`final_results/<path without extension>_compare.jpg`, beside the frames' own
`matting_output/<path without extension>/<frame>.png` (ingest keeps them free: a video claims
its stem like an image does, `gateway.intake.output_names`).

The sheet tiles the frames' own comparison sheets (written by the comparison stage), scaled
down: the gateway draws nothing of its own and imports no worker code.

Every read and write goes through the object store (`Storage.source`, `Storage.writing`):
files in DATA_DIR by default, objects on S3 (the encoder writes a temporary local file that is
then uploaded).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from gateway.intake.video import VideoInfo, frame_path, read_manifest
from gateway.results.members import JobFinder, Member
from gateway.results.report import ReportItem
from shared.errors import ObjectMissing
from shared.storage import (
    COMPARE_SUFFIX,
    FINAL_RESULTS,
    INPUT,
    MATTING_OUTPUT,
    Storage,
    model_output_rel,
)

__all__ = [
    "ALPHA_PIX_FMT",
    "SHEET_COLUMNS",
    "SHEET_FRAMES",
    "TILE_WIDTH",
    "VIDEO_CODEC",
    "WEBM_SUFFIX",
    "VideoMembers",
    "add_videos",
    "assemble_videos",
    "sample_frames",
    "video_members",
    "webm_rel",
    "write_sheet",
    "write_webm",
]

log = logging.getLogger(__name__)

WEBM_SUFFIX = ".webm"
VIDEO_CODEC = "libvpx-vp9"
"""VP9 is the codec whose WebM carries an alpha plane that browsers play (FFmpeg's libvpx)."""
ALPHA_PIX_FMT = "yuva420p"
SHEET_FRAMES = 12
"""Frames sampled, evenly spaced, for a video's contact sheet."""
SHEET_COLUMNS = 3
TILE_WIDTH = 480
"""Width in pixels of one frame's comparison sheet on the contact sheet."""
SHEET_QUALITY = 85
_MISSING_GREY = (128, 128, 128)


def webm_rel(storage: Storage, job_id: str, info: VideoInfo) -> str:
    return storage.matting_rel(job_id, info.path, WEBM_SUFFIX)


def _frame_sources(storage: Storage, job_id: str, name: str) -> tuple[str, str]:
    """(the frame's default cut-out `<frame>.png`, its full-size matte `<frame>.alpha.png`),
    as keys of the store."""
    cut_rel = storage.matting_rel(job_id, name)
    return cut_rel, model_output_rel(cut_rel, "", 0, alpha=True)


def _open(storage: Storage, key: str) -> Image.Image | None:
    """The image under `key` (a file, or an object's bytes); None when there is none."""
    try:
        source = storage.source(key)
    except ObjectMissing:
        return None
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _frame_rgba(storage: Storage, job_id: str, info: VideoInfo, i: int
                ) -> npt.NDArray[np.uint8] | None:
    """Frame i's cut-out as H×W×4, at the video's size; None when it has none.

    Where the frame has its full-size matte (`output=both`, and every job with output options:
    a cropped, resized or flattened cut-out is no video frame) the colour comes from the
    decoded frame and the alpha from that matte; so it does for an alpha-only job, whose
    cut-out is a grey matte. Otherwise the RGBA cut-out is the frame."""
    name = frame_path(info.path, i)
    cut, matte = _frame_sources(storage, job_id, name)
    im = _open(storage, matte)
    from_cut = im is None
    if im is None:
        im = _open(storage, cut)
    if im is None:
        return None
    with im:
        if im.mode == "RGBA" and from_cut:
            rgba = im.copy()
        else:
            src = _open(storage, f"{INPUT}/{job_id}/chunks/{name}")
            if src is None:
                raise ObjectMissing(f"frame {name!r} of job {job_id} is gone")
            with src:
                rgba = src.convert("RGB")
            rgba.putalpha(im.convert("L").resize(rgba.size))
    if rgba.size != (info.width, info.height):
        rgba = rgba.resize((info.width, info.height))
    return np.asarray(rgba, dtype=np.uint8)


def write_webm(storage: Storage, job_id: str, info: VideoInfo) -> int:
    """The video's cut-out as WebM (VP9 + alpha), written atomically; the number of frames
    that had no cut-out (transparent in the video). Blocking."""
    blank = np.zeros((info.height, info.width, 4), np.uint8)
    missing = 0
    with storage.writing(webm_rel(storage, job_id, info)) as tmp, \
            av.open(str(tmp), "w", format="webm") as out:
        stream = out.add_stream(VIDEO_CODEC, rate=info.fps)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = info.width, info.height, ALPHA_PIX_FMT
        for i in range(info.frames):
            rgba = _frame_rgba(storage, job_id, info, i)
            if rgba is None:
                missing += 1
                rgba = blank
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return missing


def sample_frames(frames: int, n: int = SHEET_FRAMES) -> list[int]:
    """Up to `n` frame numbers, evenly spaced, first and last included."""
    if frames <= n:
        return list(range(frames))
    return sorted({round(k * (frames - 1) / (n - 1)) for k in range(n)})


def write_sheet(storage: Storage, job_id: str, info: VideoInfo) -> None:
    """The contact sheet: sampled frames' comparison sheets, scaled to TILE_WIDTH, in rows of
    SHEET_COLUMNS, each labelled with its frame number (a grey tile where a frame has none).
    Blocking; holds the sheet and one tile."""
    picks = sample_frames(info.frames)
    tile_h = max(1, round(TILE_WIDTH * info.height / (2 * info.width)))
    rows = -(-len(picks) // SHEET_COLUMNS)
    cols = min(SHEET_COLUMNS, len(picks))
    sheet = Image.new("RGB", (cols * TILE_WIDTH, rows * tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(picks):
        x, y = (k % SHEET_COLUMNS) * TILE_WIDTH, (k // SHEET_COLUMNS) * tile_h
        im = _open(storage, storage.compare_rel(job_id, frame_path(info.path, i)))
        if im is not None:
            with im:
                im.draft("RGB", (TILE_WIDTH, tile_h))  # JPEG: decode at a reduced scale
                tile = im.convert("RGB").resize((TILE_WIDTH, tile_h))
        else:
            tile = Image.new("RGB", (TILE_WIDTH, tile_h), _MISSING_GREY)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + 4), f"{i:06d}", fill=(255, 255, 0))
    with storage.writing(storage.compare_rel(job_id, info.path)) as tmp:
        sheet.save(tmp, format="JPEG", quality=SHEET_QUALITY)


def assemble_videos(storage: Storage, job_id: str) -> int:
    """Write every video of the job whose alpha video or sheet is missing; how many were
    written. Blocking (the job's end runs it in a thread). One video that fails to assemble
    is logged and left out (the report says so); the others still go."""
    done = 0
    for info in read_manifest(storage, job_id):
        if (storage.objects.exists(webm_rel(storage, job_id, info))
                and storage.objects.exists(storage.compare_rel(job_id, info.path))):
            continue
        try:
            write_webm(storage, job_id, info)
            write_sheet(storage, job_id, info)
        except (OSError, ValueError, av.error.FFmpegError):
            log.exception("job %s: assembling video %r failed", job_id, info.path)
            continue
        done += 1
    return done


@dataclass
class VideoMembers:
    """One video's files in the zip (file or object, name in the zip) and its report item."""

    files: list[tuple[Member, str]]
    item: ReportItem


def _missing_frames(storage: Storage, job_id: str, info: VideoInfo, finder: JobFinder) -> int:
    return sum(
        not any(finder.find(k) is not None
                for k in _frame_sources(storage, job_id, frame_path(info.path, i)))
        for i in range(info.frames)
    )


def video_members(storage: Storage, job_id: str, final: bool) -> list[VideoMembers]:
    """Each video's assembled files (those that exist) and its report item: `completed` with
    the video written (a note counts the frames that failed), else `failed` once the job has
    ended (`final`) or `running` before. Blocking: it stats every frame's cut-out."""
    out: list[VideoMembers] = []
    finder = JobFinder(storage)
    for info in read_manifest(storage, job_id):
        stem = Storage.stem_path(info.path)
        files: list[tuple[Member, str]] = []
        webm = finder.find(webm_rel(storage, job_id, info))
        sheet = finder.find(storage.compare_rel(job_id, info.path))
        webm_name = f"{MATTING_OUTPUT}/{stem}{WEBM_SUFFIX}"
        sheet_name = f"{FINAL_RESULTS}/{stem}{COMPARE_SUFFIX}"
        if webm is not None:
            files.append((webm, webm_name))
        if sheet is not None:
            files.append((sheet, sheet_name))
        missing = _missing_frames(storage, job_id, info, finder)
        error = None
        if webm is not None:
            state = "completed"
            if missing:
                error = (f"{missing} of {info.frames} frames failed "
                         "(fully transparent in the video)")
        elif final:
            state, error = "failed", "the video could not be assembled (see the gateway's log)"
        else:
            state = "running"
        item = ReportItem(
            path=info.path, state=state, error=error,
            matting_output=webm_name if webm is not None else None,
            compare_output=sheet_name if sheet is not None else None,
        )  # fmt: skip
        out.append(VideoMembers(files, item))
    return out


def add_videos(storage: Storage, job_id: str, final: bool, added: set[str] | None = None
               ) -> tuple[list[tuple[Member, str]], list[ReportItem]]:
    """(files for the zip, report items) of the job's videos, after the frames' own; `added`
    (the zip's names so far) keeps a name from going in twice. Blocking."""
    files: list[tuple[Member, str]] = []
    items: list[ReportItem] = []
    for vm in video_members(storage, job_id, final):
        for path, name in vm.files:
            if added is None or name not in added:
                files.append((path, name))
                if added is not None:
                    added.add(name)
        items.append(vm.item)
    return files, items

