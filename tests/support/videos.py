"""Short videos made with PyAV for the video tests: moving coloured shapes, so every frame
differs and a frame out of order would show."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

__all__ = ["CODECS", "frame_pixels", "make_video", "video_bytes"]

CODECS = {".mp4": "mpeg4", ".webm": "libvpx-vp9", ".mkv": "libvpx-vp9", ".mov": "mpeg4"}
"""Encoders every PyAV wheel ships (libx264 may be missing in some)."""


def frame_pixels(i: int, w: int, h: int) -> npt.NDArray[np.uint8]:
    """Frame `i`: a dark blue ground, a red square moving right, a green bar moving down."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = (20, 40, 90)
    x = (4 * i) % max(1, w - 16)
    a[10:26, x:x + 16] = (230, 30, 30)
    y = (3 * i) % max(1, h - 6)
    a[y:y + 6, :] = (30, 200, 60)
    return a


def make_video(path: Path, frames: int = 12, w: int = 64, h: int = 48,
               fps: int | Fraction = 10) -> Path:
    """Write `path` (the suffix picks the encoder, `CODECS`)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(CODECS[path.suffix.lower()], rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, w, h), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def video_bytes(tmp: Path, suffix: str = ".mp4", **kw: int) -> bytes:
    return make_video(tmp / f"made{suffix}", **kw).read_bytes()
