"""What every learned model shares: resize and normalise per preset, batch, read the output.

The runtimes (onnxruntime, torch, LiteRT) differ only in how one normalised batch becomes one
raw output array; everything around that — sizes, normalisation, activation, min-max, the
resize back, half-the-batch on out-of-memory, the optional edge refinement — lives here once.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from matting_worker.engines.base import Engine, EngineError, Matte, RGBImage
from matting_worker.engines.device import cpu_threads
from matting_worker.engines.presets import Preset

__all__ = ["FloatArray", "LearnedEngine", "run_with_backoff", "step_threads", "to_class_maps",
           "to_maps"]

FloatArray = npt.NDArray[np.float32]
_T = TypeVar("_T")

FIXED_BATCH_IMAGES = 4
"""Images per batch for a model whose graph takes one at a time: enough to overlap decode and
encode with inference, few enough that the 1080p images decoded ahead stay small: with 16,
`mattepipe matte` on U²-Net-p peaked at 858 MB against rembg's 693; with 4, at 459 MiB
against rembg's 671 (BENCHMARKS.md "mattepipe vs rembg")."""


def step_threads(device: str, parallel_parts: int, cores: int) -> int:
    """Threads for the steps around the model (`LearnedEngine._each`: resize, normalise, grow
    the matte back), for a runtime on `device` that runs `parallel_parts` parts at once, in a
    worker whose share of the cores is `cores`.

    - Several parts at once (OpenVINO's streams): one thread per part.
    - On a GPU: the worker's cores. Done one image after another, a batch of 16 640×480 images
      took ≈ 0.08 s of steps on one core, about twice the card's inference of it, and one
      worker matted little more than one bare process (55 images/s against 41, the card 13 %
      busy on an H200: BENCHMARKS.md "GPU: the workers and the whole pipeline on one card").
    - Otherwise one: a CPU runtime's inference takes every thread of the worker anyway.
    """
    if parallel_parts > 1:
        return parallel_parts
    if device == "cuda":
        return max(1, cores)
    return 1


def run_with_backoff(
    run: Callable[[FloatArray], FloatArray],
    batch: FloatArray,
    is_oom: Callable[[BaseException], bool],
    on_oom: Callable[[int], None] | None = None,
) -> FloatArray:
    """`run(batch)`; on out-of-memory, the two halves one after the other, down to one image.

    A shared card's free memory changes with the other workers' load, so a batch that fit a
    minute ago may not now: smaller batches finish the tasks where failing them would not.
    """
    try:
        return run(batch)
    except Exception as exc:
        if not is_oom(exc):
            raise
        n = len(batch)
        if n <= 1:
            raise EngineError("out of GPU memory even for a single image", retryable=True) from exc
        if on_oom is not None:
            on_oom(n)
        half = (n + 1) // 2
        first = run_with_backoff(run, batch[:half], is_oom, on_oom)
        second = run_with_backoff(run, batch[half:], is_oom, on_oom)
        return np.concatenate([first, second])


def to_maps(raw: npt.NDArray[Any], n: int, layout: str, channel: int) -> FloatArray:
    """Any usual output shape (N1HW, NHW1, NCHW, NHW, HW) → N×H×W float32."""
    arr = np.asarray(raw)
    if arr.ndim == 2 and n == 1:
        arr = arr[None]
    if arr.ndim == 4:
        channels_last = layout == "nhwc" or (arr.shape[-1] <= 4 < arr.shape[1])
        count = arr.shape[-1] if channels_last else arr.shape[1]
        if channel >= count:
            raise EngineError(f"model output has {count} channels; preset wants channel {channel}")
        arr = arr[..., channel] if channels_last else arr[:, channel]
    if arr.ndim != 3 or arr.shape[0] != n:
        raise EngineError(f"cannot read a matte from a model output of shape {raw.shape}")
    out: FloatArray = arr.astype(np.float32, copy=False)
    return out


def to_class_maps(raw: npt.NDArray[Any], n: int, layout: str) -> FloatArray:
    """A per-class output (NCHW or NHWC scores) → N×H×W of each pixel's most likely class."""
    arr = np.asarray(raw)
    if arr.ndim != 4 or arr.shape[0] != n:
        raise EngineError(f"a class map needs an N×C×H×W output, not {raw.shape}")
    axis = 3 if layout == "nhwc" else 1
    out: FloatArray = np.argmax(arr, axis=axis).astype(np.float32)
    return out


def _pil_resize(array: npt.NDArray[np.uint8], h: int, w: int) -> npt.NDArray[np.uint8]:
    """Pillow's LANCZOS, as rembg resizes (its filter differs from OpenCV's Lanczos4)."""
    im = Image.fromarray(array)
    return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)


class LearnedEngine(Engine):
    """A model file plus its preset; subclasses bring the runtime."""

    kind = ""

    def __init__(self, name: str, path: Path, preset: Preset) -> None:
        self.name = name
        self.path = path
        self.preset = preset
        self.max_batch_size = preset.max_batch_size
        self.layout = "nchw" if preset.layout == "auto" else preset.layout
        self.static_hw: tuple[int, int] | None = None
        """The model's own fixed input size, when its graph has one; wins over the preset."""
        self.fixed_batch = False
        """The batch axis is fixed to 1: run image by image."""
        self.runtime = ""
        """What runs the model (onnxruntime, openvino, torch, litert); reported in /health."""
        self.precision = "f32"
        """The arithmetic it runs at (f32, bf16, f16); reported in /health and the logs."""
        self.parallel_parts = 1
        """How many parts of a batch the runtime runs at once (OpenVINO's streams): a batch
        of a graph that takes any batch is split into this many."""
        self._loaded = False
        self._lock = threading.Lock()
        self._steps: ThreadPoolExecutor | None = None
        """Threads for the resize and normalisation around the model (`_each`), as many as
        `step_threads` says; None while that is one."""

    # --- runtime hooks -----------------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Open the model; set device, layout, static_hw, fixed_batch."""

    @abstractmethod
    def _run(self, batch: FloatArray) -> npt.NDArray[Any]:
        """One normalised batch (layout as `self.layout`) → the raw matte output."""

    def _run_parts(self, parts: list[FloatArray]) -> list[npt.NDArray[Any]]:
        """Each part's raw output, in order; a runtime that runs several at once overrides
        this (OpenVINO's streams), the others run them one after the other."""
        return [self._run(p) for p in parts]

    def _is_oom(self, exc: BaseException) -> bool:
        return False

    def _after_oom(self, batch_size: int) -> None:
        """Start below the size that failed from now on."""
        self.max_batch_size = max(1, min(self.max_batch_size, batch_size // 2))

    # --- Engine ----------------------------------------------------------------------------
    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                self._load()
                if self.fixed_batch:
                    # A batch-1 graph gains nothing from big batches; fewer images decoded
                    # ahead keep the worker's memory below rembg's (BENCHMARKS.md).
                    self.max_batch_size = min(self.max_batch_size, FIXED_BATCH_IMAGES)
                threads = step_threads(self.device, self.parallel_parts, cpu_threads())
                if threads > 1 and self._steps is None:
                    self._steps = ThreadPoolExecutor(threads,
                                                     thread_name_prefix=f"{self.name}-steps")
                self._loaded = True

    _RUNTIME_ATTRS = ("session", "_ov_request", "_ov_queue", "model", "interpreter")
    """Where the runtimes keep what `_load` opened (onnxruntime, OpenVINO, torch, LiteRT)."""

    def unload(self) -> None:
        """Drop the runtime's objects; the last reference to an onnxruntime session or a torch
        module going is what frees its memory (the worker then empties torch's CUDA cache)."""
        with self._lock:
            for attr in self._RUNTIME_ATTRS:
                if getattr(self, attr, None) is not None:
                    setattr(self, attr, None)
            if self._steps is not None:
                self._steps.shutdown(wait=False)
                self._steps = None
            self._loaded = False

    def watched_files(self) -> tuple[Path, ...]:
        """The model file and its `<stem>.json` override."""
        return (self.path, self.path.with_suffix(".json"))

    def info(self) -> dict[str, object]:
        return {
            **super().info(),
            "format": self.kind,
            "file": self.path.name,
            "preset": self.preset.name,
            "input": list(self.static_hw) if self.static_hw else self.preset.size_policy,
            "refine": self.preset.refine,
            "runtime": self.runtime,
            "precision": self.precision,
            "resample": self.preset.resample,
        }

    def predict(self, images: Sequence[RGBImage]) -> list[Matte]:
        self.load()
        coarse: list[FloatArray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.target_size(im.shape[0], im.shape[1]), []).append(i)
        with self._lock:
            for hw, members in groups.items():
                start = 0
                while start < len(members):
                    chunk = members[start : start + self.max_batch_size]
                    start += len(chunk)
                    batch = np.stack(self._each(self.preprocess,
                                                [(images[i], hw) for i in chunk]))
                    maps = self._forward(batch)
                    grown = self._each(self.postprocess,
                                       [(maps[j], *images[i].shape[:2])
                                        for j, i in enumerate(chunk)])
                    for i, alpha in zip(chunk, grown, strict=True):
                        coarse[i] = alpha
        return [self._matte(im, c) for im, c in zip(images, coarse, strict=True) if c is not None]

    # --- steps ----------------------------------------------------------------------------
    def _each(self, step: Callable[..., _T], calls: Sequence[tuple[Any, ...]]) -> list[_T]:
        """`step(*args)` for every args of `calls`, in order. Where the runtime runs several
        parts at once (OpenVINO's streams: the cores this engine may use), or runs on a GPU,
        side by side on `step_threads` threads: the resizes and the normalisation release the
        GIL, and one after the other they left every core but one idle between two inferences
        (issue 14, point 2), and the card waiting. Each image's answer is the same either way:
        the steps share nothing."""
        if self._steps is None or len(calls) < 2:
            return [step(*args) for args in calls]
        return list(self._steps.map(lambda args: step(*args), calls))

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) an h×w image is fed at."""
        p = self.preset
        if self.static_hw is not None:
            return self.static_hw
        if p.size_policy == "fixed":
            return p.input_size
        m = p.multiple
        if p.size_policy == "ref":
            # MODNet's own rule: shrink or grow to ref_size unless the image already spans it.
            if max(h, w) < p.ref_size or min(h, w) > p.ref_size:
                if w >= h:
                    th, tw = p.ref_size, int(w / h * p.ref_size)
                else:
                    th, tw = int(h / w * p.ref_size), p.ref_size
            else:
                th, tw = h, w
        else:
            s = min(1.0, p.ref_size / max(h, w))
            th, tw = round(h * s), round(w * s)
        return max(m, th - th % m), max(m, tw - tw % m)

    def preprocess(self, image: RGBImage, hw: tuple[int, int]) -> FloatArray:
        th, tw = hw
        h, w = image.shape[:2]
        if self.preset.resample == "rembg":
            image = _pil_resize(image, th, tw)  # rembg resizes even at the same size
        elif (h, w) != (th, tw):
            shrink = th * tw < h * w
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = np.asarray(cv2.resize(image, (tw, th), interpolation=interp), np.uint8)
        x: FloatArray = image.astype(np.float32)
        p = self.preset
        x /= max(float(x.max()), 1e-6) if p.scale == "max" else 255.0
        if p.color == "bgr":
            x = x[..., ::-1]
        x = ((x - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)).astype(
            np.float32, copy=False
        )
        if self.layout == "nchw":
            x = x.transpose(2, 0, 1)
        out: FloatArray = np.ascontiguousarray(x, dtype=np.float32)
        return out

    def _forward(self, batch: FloatArray) -> FloatArray:
        def maps(raw: npt.NDArray[Any], n: int) -> FloatArray:
            if self.preset.classes is not None:
                return to_class_maps(raw, n, self.layout)
            return to_maps(raw, n, self.layout, self.preset.channel)

        def run(b: FloatArray) -> FloatArray:
            if self.fixed_batch:
                parts = [b[i : i + 1] for i in range(len(b))]
            else:
                parts = list(np.array_split(b, max(1, min(len(b), self.parallel_parts))))
            out = [maps(raw, len(p))
                   for raw, p in zip(self._run_parts(parts), parts, strict=True)]
            return out[0] if len(out) == 1 else np.concatenate(out)

        try:
            return run_with_backoff(run, batch, self._is_oom, self._after_oom)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"model {self.name!r} failed: {exc}") from exc

    def postprocess(self, raw: FloatArray, h: int, w: int) -> FloatArray:
        """One raw map → alpha in [0, 1] at the image's size."""
        p = self.preset
        y: FloatArray = raw.astype(np.float32)
        if p.classes is not None:
            return self._class_alpha(y, h, w)
        if p.activation == "sigmoid" or (
            p.activation == "auto" and (float(y.min()) < 0.0 or float(y.max()) > 1.0)
        ):
            y = (1.0 / (1.0 + np.exp(-np.clip(y, -60.0, 60.0)))).astype(np.float32)
        if p.minmax:
            lo, hi = float(y.min()), float(y.max())
            if hi - lo > 1e-6:
                y = ((y - lo) / (hi - lo)).astype(np.float32)
        y = np.clip(y, 0.0, 1.0).astype(np.float32)
        if p.resample == "rembg":
            # rembg truncates to 8 bits at the model's size, then resizes the 8-bit mask.
            return self._grow8((y * 255.0).astype(np.uint8), h, w)
        if y.shape != (h, w):
            y = np.asarray(cv2.resize(y, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
        out: FloatArray = np.clip(y, 0.0, 1.0).astype(np.float32)
        return out

    def _grow8(self, mask: npt.NDArray[np.uint8], h: int, w: int) -> FloatArray:
        if mask.shape != (h, w):
            mask = _pil_resize(mask, h, w)
        out: FloatArray = mask.astype(np.float32) / np.float32(255.0)
        return out

    def _class_alpha(self, labels: FloatArray, h: int, w: int) -> FloatArray:
        """Class labels → alpha: 1 where the label is one of the preset's classes.

        rembg resizes the 8-bit label image itself (LANCZOS rings into neighbouring labels at
        class borders) and then maps labels through a palette; `rembg` resampling does that.
        """
        wanted = np.zeros(256, np.float32)
        wanted[list(self.preset.classes or ())] = 1.0
        idx = np.clip(labels, 0, 255).astype(np.uint8)
        if self.preset.resample == "rembg":
            if idx.shape != (h, w):
                idx = _pil_resize(idx, h, w)
            out: FloatArray = wanted[idx]
            return out
        member = wanted[idx]
        if member.shape != (h, w):
            member = np.asarray(cv2.resize(member, (w, h), interpolation=cv2.INTER_LINEAR),
                                np.float32)
        return np.clip(member, 0.0, 1.0).astype(np.float32)

    def _matte(self, image: RGBImage, coarse: FloatArray) -> Matte:
        if not self.preset.refine:
            return Matte(alpha=coarse)
        from matting_worker.engines.refine import (
            refine,  # the band solver is heavy to import; only refining needs it
        )

        return refine(image, coarse)

    def rvm_ratio(self, h: int, w: int) -> float:
        """RVM's downsample ratio for an h×w input: the preset's, or its authors' rule."""
        if self.preset.downsample_ratio is not None:
            return self.preset.downsample_ratio
        return min(1.0, 512.0 / max(h, w))
