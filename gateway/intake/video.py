"""An uploaded video becomes one PNG per frame, decoded once at ingest (PyAV, FFmpeg inside).

Extraction decision (README, "Video"): frames are decoded here, in the ingest thread, into
`input/<job>/chunks/<video path without extension>/<frame, 6 digits>.png`, one task each
(task path `<video stem>/<frame>.png`). Decoding a frame on demand would cost a seek back to
the previous keyframe and a decode of everything after it, per task, and every worker would
need the video file and a decoder; written once, a frame is an ordinary image to every stage
(retries, the comparison sheet, the zip) with nothing video-specific downstream. The price is
disk (a PNG per frame), which counts against MAX_UNCOMPRESSED_SIZE and MIN_FREE_DISK like an
archive's bytes (not against MAX_COMPRESSION_RATIO: a video is meant to expand).

Limits come first from the container's metadata (size, duration, frame count: nothing is
decoded for a video that claims too much) and are enforced again while decoding, since the
metadata is the uploader's word. A video either becomes all its frames or one rejected item
with a reason: frames are announced only once the last one decoded, and a refusal removes
those already written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av
import av.error
from PIL import Image

from shared.errors import IntakeError
from shared.formats import VIDEO_SUFFIXES
from shared.settings import Settings
from shared.storage import INPUT, Storage

__all__ = [
    "DEFAULT_RATE",
    "FRAME_DIGITS",
    "FRAME_PNG_LEVEL",
    "MANIFEST",
    "VideoInfo",
    "VideoLimits",
    "VideoRejected",
    "decode_frames",
    "frame_path",
    "is_video_magic",
    "is_video_name",
    "read_manifest",
]

FRAME_DIGITS = 6
"""Frame numbers in names: `000000.png` …; MAX_VIDEO_FRAMES stays below 10**6."""
FRAME_PNG_LEVEL = 1
"""zlib level of the frame PNGs: they are read once or twice and then kept only for retries."""
DEFAULT_RATE = Fraction(25)
"""Frames per second assumed when the container names none (the alpha video needs one)."""
MANIFEST = "videos.jsonl"
"""`input/<job>/videos.jsonl`: one line per video the job's frames came from (`VideoInfo`)."""
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


class VideoRejected(IntakeError):
    """The video is refused as a whole; `reason` is what the user is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoLimits:
    max_seconds: float
    max_pixels: int
    max_frames: int

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(settings.max_video_seconds, settings.max_video_pixels,
                   settings.max_video_frames)


@dataclass(frozen=True)
class VideoInfo:
    """What the job keeps of one video to put it back together (`gateway.results.video`)."""

    path: str
    """The video's path inside the upload (`clips/a.mp4`)."""
    frames: int
    rate: str
    """Frames per second as a fraction (`30000/1001`): the alpha video plays at the same rate."""
    width: int
    height: int

    @property
    def fps(self) -> Fraction:
        return Fraction(self.rate)

    def to_line(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False) + "\n"


def is_video_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in VIDEO_SUFFIXES


def is_video_magic(head: bytes) -> bool:
    """Matroska/WebM (EBML) or an ISO media / QuickTime file (a known box at offset 4)."""
    return head.startswith(_EBML_MAGIC) or head[4:8] in _MP4_BOXES


def frame_path(video_path: str, index: int) -> str:
    """`clips/a.mp4`, 7 → `clips/a/000007.png`: frame tasks sit in a folder named after the
    video, so their outputs (`matting_output/clips/a/000007.png`) sit beside its own."""
    return f"{Storage.stem_path(video_path)}/{index:0{FRAME_DIGITS}d}.png"


def read_manifest(storage: Storage, job_id: str) -> Iterator[VideoInfo]:
    """The job's videos, in upload order (none when it had none). Blocking. Read through the
    object store: the file in DATA_DIR, or the object ingest published on S3."""
    try:
        text = storage.objects.get(f"{INPUT}/{job_id}/{MANIFEST}").decode("utf-8")
    except FileNotFoundError:  # ObjectMissing is one
        return
    for line in text.splitlines():
        if line.strip():
            yield VideoInfo(**json.loads(line))


def _seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _check_metadata(container: av.container.InputContainer, limits: VideoLimits
                    ) -> tuple[av.video.stream.VideoStream, Fraction]:
    if not container.streams.video:
        raise VideoRejected("no video stream in the file")
    stream = container.streams.video[0]
    w, h = stream.codec_context.width, stream.codec_context.height
    if w * h > limits.max_pixels:
        raise VideoRejected(f"video frames too large: {w}x{h} pixels "
                            f"(limit {limits.max_pixels}; MAX_VIDEO_PIXELS)")
    seconds = _seconds(container, stream)
    if seconds > limits.max_seconds:
        raise VideoRejected(f"video too long: {seconds:.1f} s (limit {limits.max_seconds:g} s; "
                            "MAX_VIDEO_SECONDS)")
    rate = Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
    declared = max(stream.frames, int(seconds * rate))
    if declared > limits.max_frames:
        raise VideoRejected(_too_many(limits))
    return stream, rate


def _too_many(limits: VideoLimits) -> str:
    return f"video has more than {limits.max_frames} frames (MAX_VIDEO_FRAMES)"


def _decode_into(video: Path, video_path: str, folder: Path, limits: VideoLimits,
                 account: Callable[[int], None], written: list[Path]) -> VideoInfo:
    with av.open(str(video), mode="r") as container:
        stream, rate = _check_metadata(container, limits)
        stream.thread_type = "AUTO"
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        size = (0, 0)
        for frame in container.decode(stream):
            if n >= limits.max_frames:
                raise VideoRejected(_too_many(limits))
            if frame.width * frame.height > limits.max_pixels:
                raise VideoRejected(f"video frame too large: {frame.width}x{frame.height} "
                                    f"pixels (limit {limits.max_pixels}; MAX_VIDEO_PIXELS)")
            if frame.time is not None and frame.time > limits.max_seconds:
                raise VideoRejected(f"video longer than {limits.max_seconds:g} s "
                                    "(MAX_VIDEO_SECONDS)")
            target = folder / f"{n:0{FRAME_DIGITS}d}.png"
            if target.exists():  # another member of the archive: never overwritten
                raise VideoRejected(f"frame name {frame_path(video_path, n)!r} clashes with "
                                    "another file of the upload")
            written.append(target)
            rgb = frame.to_ndarray(format="rgb24")
            Image.fromarray(rgb, "RGB").save(target, format="PNG", compress_level=FRAME_PNG_LEVEL)
            account(target.stat().st_size)
            size = (frame.width, frame.height)
            n += 1
    if n == 0:
        raise VideoRejected("video has no decodable frames")
    return VideoInfo(video_path, n, str(rate), *size)


def _unlink(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def decode_frames(video: Path, video_path: str, dest: Path, limits: VideoLimits,
                  account: Callable[[int], None] = lambda _n: None) -> tuple[VideoInfo, Path]:
    """Decode `video` (the upload's `video_path`) into `dest/<stem>/<frame>.png`; its
    VideoInfo and the frame folder. `account(bytes)` is told each frame's size and may raise
    VideoRejected (size budget, free disk). On any refusal the frames written are removed and
    VideoRejected says why (blocking; runs in the ingest thread). Only the frame files are
    removed: the folder may hold other members of the same archive."""
    folder = dest / Storage.stem_path(video_path)
    written: list[Path] = []
    try:
        return _decode_into(video, video_path, folder, limits, account, written), folder
    except VideoRejected:
        _unlink(written)
        raise
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        _unlink(written)
        # FFmpeg's own words without its errno; never the absolute path of our copy
        text = exc.strerror if isinstance(exc, av.error.FFmpegError) and exc.strerror else str(exc)
        detail = text.replace(str(video), video_path) or type(exc).__name__
        raise VideoRejected(f"cannot read video: {detail}") from exc

