"""Test images and archives: real sample photos scaled down, drawn discs with their exact
alpha, sets of distinct PNGs or of incompressible noise, zips of them."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.servers import ROOT

SAMPLES = ROOT / "mattepipe" / "assets" / "samples"


def photo_bytes(name: str, side: int = 200) -> bytes:
    """A real sample photo, scaled down so the suite stays quick on two cores."""
    im = Image.open(SAMPLES / name).convert("RGB")
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def studio_shot(w: int = 160, h: int = 120) -> tuple[bytes, bytes]:
    """A disc on a plain backdrop, with its exact alpha as ground truth (PNG, PNG)."""
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(30.0 - np.hypot(xx - w / 2, yy - h / 2), 0.0, 1.0)
    rgb = (alpha[..., None] * np.array([200, 40, 30]) + (1 - alpha[..., None]) * 235).astype(
        np.uint8
    )
    img, gt = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(img, format="PNG")
    Image.fromarray((alpha * 255).astype(np.uint8)).save(gt, format="PNG")
    return img.getvalue(), gt.getvalue()


def png_set(n: int, side: int = 96) -> dict[str, bytes]:
    """`n` small distinct PNGs (a disc on a tinted backdrop), named in a two-level tree."""
    out: dict[str, bytes] = {}
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(n):
        r = side / 4 + (i % 7)
        disc = np.hypot(xx - side / 2, yy - side / 2) < r
        rgb = np.empty((side, side, 3), np.uint8)
        rgb[...] = (20 + 3 * i % 200, 230, 240 - 2 * i % 200)
        rgb[disc] = (200, 40 + i % 150, 30)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        out[f"set/part{i % 3}/img{i:03d}.png"] = buf.getvalue()
    return out


def noise_set(n: int, side: int) -> dict[str, bytes]:
    """`n` PNGs of noise, named in a two-level tree. They do not compress, so every image
    costs the workers real decode and encode time (a job stays in flight long enough to be
    caught there) and every cut-out is as big as its input."""
    rng = np.random.default_rng(0)
    out: dict[str, bytes] = {}
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(buf, "PNG")
        out[f"noise/part{i % 3}/img{i:03d}.png"] = buf.getvalue()
    return out


def zip_of_images(names: list[str]) -> bytes:
    """A zip of small identical JPEGs (16×12) under `names`: uploads whose content the test
    does not look at."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n in names:
            img = io.BytesIO()
            Image.new("RGB", (16, 12), (120, 30, 200)).save(img, "JPEG")
            zf.writestr(n, img.getvalue())
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def stage_inputs(data_dir: Path, seed: int, h: int = 40, w: int = 60) -> np.ndarray:
    """A noise photo at input/j/p.png (h×w, from `seed`), an empty matting_output/j, and the
    photo's mask for the tests to save as mattes or ground truths: a box of 255 on 0."""
    (data_dir / "input/j").mkdir(parents=True)
    (data_dir / "matting_output/j").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        data_dir / "input/j/p.png")
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 15:45] = 255
    return mask
