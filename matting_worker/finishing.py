"""One engine matte → the job's finished cut-out bytes (`shared.finishing`: crop, max_size,
background, format). Kept apart from `matting_worker.stage.MattingStage.finish` so the stage
calls it in one place, and `mattepipe matte` (`matting_worker.oneshot`) shares it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from matting_worker.engines.base import Matte, RGBImage
from shared.finishing import OutputOptions, finish_image
from shared.formats import OutputMode

__all__ = ["finished_cutout"]


def finished_cutout(rgb: RGBImage, matte: Matte, mode: OutputMode,
                    options: OutputOptions) -> bytes:
    """The cut-out (RGBA: the estimated foreground when the engine gives one, else the input's
    colours) or, for output=alpha, the grey matte, through the options' chain."""
    alpha = np.clip(np.rint(matte.alpha * 255.0), 0, 255).astype(np.uint8)
    if mode == OutputMode.ALPHA:
        im = Image.fromarray(alpha, "L")
    else:
        colour = rgb if matte.foreground is None else matte.foreground
        im = Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    return finish_image(im, alpha, options)
