"""The RGBA cut-out of one decoded input: 8 or 16 bits as the input had, its profile kept.

Shared by the matting stage and `mattepipe matte`, so both write the same file for the same
input. The encoders themselves stay profile-agnostic (`shared.icc.with_icc` adds the chunk).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shared.deep import encode_png_rgba16
from shared.icc import with_icc
from shared.imaging import DecodedImage, encode_png_rgba

__all__ = ["encode_cutout"]


def encode_cutout(
    image: DecodedImage,
    alpha: npt.NDArray[np.floating],
    foreground: npt.NDArray[np.uint8] | None = None,
) -> bytes:
    """PNG bytes: 16-bit RGBA when the input had 16 bits, else 8-bit; the input's ICC
    profile embedded when `COLOR_MANAGEMENT=keep` kept one."""
    if image.rgb16 is not None:
        data = encode_png_rgba16(image.rgb16, alpha, foreground, image.rgb)
    else:
        data = encode_png_rgba(image.rgb, alpha, foreground)
    return with_icc(data, image.icc)
