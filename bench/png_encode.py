"""The cut-out's PNG: Pillow's encoder (adaptive row filters) against `shared.imaging`'s (one
fixed "up" filter, OpenCV), side by side on the same pixels: CPU ms to write, bytes, CPU ms
for the comparison stage to read the alpha back (`decode_alpha`). Both at zlib level 1, both
lossless (checked). Images: the vs_rembg bench's studio shots at its four sizes and the bundled
sample photos (mattepipe/assets/samples) at 1920×1080, each with a soft round matte.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.pipeline import _studio_images
from bench.vs_rembg import SIZES
from shared.imaging import decode_alpha, decode_rgb, encode_png_rgba

__all__ = ["run"]

SAMPLES = Path(__file__).resolve().parent.parent / "mattepipe" / "assets" / "samples"
REPEATS = 5


def _pillow(rgb: npt.NDArray[np.uint8], a: npt.NDArray[np.uint8]) -> bytes:
    """The encoder before 2026-12-02 (Pillow, compress_level=1, adaptive filters)."""
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, a]), "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _cpu_ms(f: Callable[[], object]) -> float:
    """The best of REPEATS runs' CPU time (process time: the machine's other load aside)."""
    f()
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.process_time()
        f()
        best = min(best, time.process_time() - t0)
    return best * 1000


def _matte(h: int, w: int) -> npt.NDArray[np.uint8]:
    yy, xx = np.mgrid[0:h, 0:w]
    r = 0.3 * min(h, w)
    soft = np.clip((r - np.hypot(xx - w / 2, yy - h / 2)) / 12.0, 0.0, 1.0)
    out: npt.NDArray[np.uint8] = np.rint(soft * 255).astype(np.uint8)
    return out


def run() -> str:
    images: list[tuple[str, npt.NDArray[np.uint8]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in SIZES:
            p = _studio_images(Path(tmp) / f"{w}x{h}", 1, w, h)[0]
            images.append((f"studio {w}×{h}", decode_rgb(p)))
    for p in sorted(SAMPLES.glob("*.jpg")):
        photo = Image.fromarray(decode_rgb(p)).resize((1920, 1080), Image.Resampling.LANCZOS)
        images.append((f"photo {p.stem} 1920×1080", np.asarray(photo)))
    lines = [
        "## PNG encode of the cut-out\n",
        " ".join(__doc__.split("\n\n")[0].split()) + " Best of "
        f"{REPEATS}, CPU ms.\n",
        "| image | Pillow ms | ours ms | × faster | Pillow KiB | ours KiB | read α Pillow's ms "
        "| read α ours ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rgb in images:
        a = _matte(*rgb.shape[:2])
        alpha = a.astype(np.float32) / 255.0
        old, new = _pillow(rgb, a), encode_png_rgba(rgb, alpha)
        back = np.asarray(Image.open(io.BytesIO(new)).convert("RGBA"))
        if not ((back[..., :3] == rgb).all() and (back[..., 3] == a).all()):
            raise RuntimeError(f"{name}: the PNG did not give the pixels back")
        t_old = _cpu_ms(partial(_pillow, rgb, a))
        t_new = _cpu_ms(partial(encode_png_rgba, rgb, alpha))
        r_old = _cpu_ms(partial(decode_alpha, old))
        r_new = _cpu_ms(partial(decode_alpha, new))
        lines.append(f"| {name} | {t_old:.1f} | {t_new:.1f} | {t_old / t_new:.2f} "
                     f"| {len(old) / 1024:.0f} | {len(new) / 1024:.0f} | {r_old:.1f} "
                     f"| {r_new:.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
