"""One process, one folder: the library behind `mattepipe matte IN_DIR OUT_DIR` (its only
command line, in mattepipe/cli/matte.py), like `rembg p`.

No services, no database: walk the folder; on a thread pool, decode the next batch and encode
the previous one while the engine works on this one (rembg does each step in turn); write
`<relative path>.png`. It is what the pipeline's benchmark compares
against, so it batches the way the workers do (engine.max_batch_size) and uses every core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from matting_worker.cutout import encode_cutout
from matting_worker.engines.base import Matte
from matting_worker.engines.device import set_cpu_threads
from matting_worker.engines.learned import FIXED_BATCH_IMAGES
from matting_worker.engines.registry import create_engine
from matting_worker.finishing import finished_cutout
from shared.finishing import OutputOptions
from shared.formats import IMAGE_SUFFIXES, OUTPUT_MODES, OutputMode
from shared.imaging import DecodedImage, ImageRejected, decode_image, encode_png_alpha
from shared.model_fetch import ZooSource
from shared.settings import get_settings
from shared.storage import atomic_write_bytes
from shared.worker.fallback import Failed, run_isolated

__all__ = ["OneshotResult", "find_images", "matte_folder"]


@dataclass
class OneshotResult:
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path relative to IN_DIR, reason)."""
    seconds: float = 0.0
    runs_on: str = ""
    """Runtime and precision, e.g. "openvino bf16": what the speed and the answers depend on."""


def find_images(in_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under `in_dir`, sorted; hidden files and `exclude` (the output) skipped."""
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for root, dirs, files in os.walk(in_dir):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        found.extend(
            here / f for f in sorted(files)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        )
    return found


def _write(image: DecodedImage, matte: Matte, target: Path, output: str,
           options: OutputOptions = OutputOptions()) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not options.is_default:
        atomic_write_bytes(target, finished_cutout(image.rgb, matte, OutputMode(output),
                                                   options))
        if output == OutputMode.BOTH:
            atomic_write_bytes(target.with_name(target.name[: -len(options.suffix)]
                                                + ".alpha.png"),
                               encode_png_alpha(matte.alpha))
        return
    if output == OutputMode.ALPHA:
        atomic_write_bytes(target, encode_png_alpha(matte.alpha))
        return
    atomic_write_bytes(target, encode_cutout(image, matte.alpha, matte.foreground))
    if output == OutputMode.BOTH:
        atomic_write_bytes(target.with_name(target.stem + ".alpha.png"),
                           encode_png_alpha(matte.alpha))


def matte_folder(
    in_dir: Path,
    out_dir: Path,
    model: str,
    models_dir: Path,
    output: str = OutputMode.RGBA,
    progress: Callable[[int, int], None] | None = None,
    options: OutputOptions = OutputOptions(),
) -> OneshotResult:
    """Matte every image under `in_dir` into `out_dir`, keeping relative paths.

    Raises UnknownModel for a bad model name and ValueError for a bad folder or output mode;
    an image that cannot be read or matted is listed in `failed` and the rest go on.
    `options` (`shared.finishing`: format, max_size, background, crop) shape each cut-out as
    a job's do; the `<x>.alpha.png` of output=both stays the full-size matte.
    """
    if output not in OUTPUT_MODES:
        raise ValueError(f"output must be one of {', '.join(OUTPUT_MODES)}, not {output!r}")
    if not in_dir.is_dir():
        raise ValueError(f"input folder not found: {in_dir}")
    started = time.perf_counter()
    # a zoo model missing from models_dir: fetched with MODEL_DOWNLOAD=1, else a KeyError
    # that says `mattepipe models pull NAME`
    engine = create_engine(model, models_dir, ZooSource.from_settings(get_settings()))
    max_pixels = get_settings().max_image_pixels
    color = get_settings().color_management
    result = OneshotResult()
    jobs: list[tuple[str, Path, Path]] = []
    claimed: dict[Path, str] = {}
    for src in find_images(in_dir, exclude=out_dir):
        rel = src.relative_to(in_dir).as_posix()
        target = out_dir / src.relative_to(in_dir).with_suffix(options.suffix)
        if target in claimed:
            result.failed.append((rel, f"output name {target.name} already taken by "
                                       f"{claimed[target]}"))
            continue
        claimed[target] = rel
        jobs.append((rel, src, target))
    total = len(jobs) + len(result.failed)
    if progress is not None:
        progress(len(result.failed), total)

    def decode(src: Path) -> DecodedImage | Exception:
        try:
            return decode_image(src, max_pixels, color)
        except (ImageRejected, OSError) as exc:
            return exc

    def settle(writes: list[tuple[str, Future[None]]]) -> None:
        for rel, fut in writes:
            try:
                fut.result()
                result.done += 1
            except OSError as exc:
                result.failed.append((rel, f"cannot write output: {exc}"))
        if progress is not None:
            progress(result.done + len(result.failed), total)

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        # The first images decode while the model loads (its runtime's import and compile
        # are a second or so of one core that rembg's start pays too): a batch-1 graph's
        # batch, before the engine says its own size.
        decoding: list[Future[DecodedImage | Exception]] = [
            pool.submit(decode, src)
            for _, src, _ in jobs[: min(max(1, engine.max_batch_size), FIXED_BATCH_IMAGES)]]
        set_cpu_threads(os.cpu_count())  # the only process on the machine: every core is ours
        try:
            engine.load()
        finally:
            set_cpu_threads(None)  # read at load; a caller's later engines get their own share
        info = engine.info()
        result.runs_on = " ".join(str(info[k]) for k in ("runtime", "precision")
                                  if info.get(k))
        writes: list[tuple[str, Future[None]]] = []
        i = 0
        while i < len(jobs) or decoding:
            if not decoding:
                size = max(1, engine.max_batch_size)
                decoding = [pool.submit(decode, src) for _, src, _ in jobs[i : i + size]]
            batch, start = decoding, i
            i += len(batch)
            size = max(1, engine.max_batch_size)  # prefetch the next batch during inference
            decoding = [pool.submit(decode, src) for _, src, _ in jobs[i : i + size]]
            images = [f.result() for f in batch]
            ok = [(j, im) for j, im in enumerate(images) if not isinstance(im, Exception)]
            for j, im in enumerate(images):
                if isinstance(im, Exception):
                    result.failed.append((jobs[start + j][0], str(im)))
            mattes = run_isolated(engine.predict, [im.rgb for _, im in ok]) if ok else []
            # the previous batch's files were encoded while this batch ran: collect them
            settle(writes)
            writes = []
            for (j, image), matte in zip(ok, mattes, strict=True):
                rel, _, target = jobs[start + j]
                if isinstance(matte, Failed):
                    result.failed.append((rel, f"matting failed: {matte.exc}"))
                else:
                    writes.append((rel, pool.submit(_write, image, matte, target, output,
                                                      options)))
        settle(writes)
    result.seconds = time.perf_counter() - started
    return result
