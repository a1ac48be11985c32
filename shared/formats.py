"""Names several services must agree on: which files are images, which output modes a job may
ask for, what the comparison metrics are called. One definition here, so the gateway's checks,
the workers and the report cannot drift apart."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FREE_KEYS",
    "GT_KEYS",
    "IMAGE_SUFFIXES",
    "IMAGE_TYPES",
    "METRIC_KEYS",
    "MODERN_IMAGE_TYPES",
    "OUTPUT_MODES",
    "VIDEO_SUFFIXES",
    "VIDEO_TYPES",
    "Metric",
    "OutputMode",
]

MODERN_IMAGE_TYPES: dict[str, str] = {
    ".heic": "heic", ".heif": "heif", ".hif": "heif", ".avif": "avif",
}  # fmt: skip
"""HEIF (every iPhone photo) and AVIF: read through pillow-heif's opener and Pillow's own AVIF
plugin (`shared.image_plugins`)."""
IMAGE_TYPES: dict[str, str] = {
    ".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp",
    ".bmp": "bmp", ".tif": "tif", ".tiff": "tif",
    **MODERN_IMAGE_TYPES,
}  # fmt: skip
"""Image file suffix (lower case) → its canonical short type; the decoders read all of them."""
IMAGE_SUFFIXES = frozenset(IMAGE_TYPES)
"""Suffixes (lower case, with the dot) of the image files we accept."""

VIDEO_TYPES: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".webm": "webm", ".mkv": "mkv"}
"""Video file suffix (lower case) → its short type: read with PyAV (FFmpeg), one task per frame
(`gateway.intake.video`)."""
VIDEO_SUFFIXES = frozenset(VIDEO_TYPES)
"""Suffixes (lower case, with the dot) of the video files we accept."""


class OutputMode(StrEnum):
    """What the matting stage writes per model for a job (`output=`)."""

    RGBA = "rgba"
    """The cut-out: the image with the matte as its alpha channel (`<x>.png`)."""
    ALPHA = "alpha"
    """The matte alone, as a grey PNG (`<x>.png`)."""
    BOTH = "both"
    """The RGBA cut-out and the matte beside it (`<x>.png` and `<x>.alpha.png`)."""


OUTPUT_MODES = tuple(m.value for m in OutputMode)
"""The output modes as plain strings, in documentation order (argparse choices, messages)."""


class Metric(StrEnum):
    """A comparison metric's key in `extra.metrics`, metrics.json and the job report."""

    SAD = "sad"
    """Sum of absolute differences to the ground truth, divided by 1000."""
    MSE = "mse"
    """Mean squared error to the ground truth."""
    GRAD = "grad"
    """Gradient error to the ground truth, divided by 1000."""
    CONN = "conn"
    """Connectivity error to the ground truth, divided by 1000."""
    COVERAGE = "coverage"
    """Mean alpha: the foreground share of the image (no ground truth needed)."""
    UNCERTAIN = "uncertain"
    """Share of pixels with 0.05 < alpha < 0.95: a mushy matte (no ground truth needed)."""
    BORDER_ALPHA = "border_alpha"
    """Mean alpha on the outermost pixel ring: background kept as foreground (no ground truth)."""


GT_KEYS: tuple[str, ...] = (Metric.SAD, Metric.MSE, Metric.GRAD, Metric.CONN)
"""The metrics that need ground truth, in report order."""
FREE_KEYS: tuple[str, ...] = (Metric.COVERAGE, Metric.UNCERTAIN, Metric.BORDER_ALPHA)
"""The metrics computed without ground truth, in report order."""
METRIC_KEYS: tuple[str, ...] = GT_KEYS + FREE_KEYS
"""Every metric key, in report order."""
