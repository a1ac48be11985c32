"""Colour profiles: carry an input's ICC profile into its cut-out, or convert to sRGB.

A catalogue shot in Display P3 or Adobe RGB looks right only with its profile: the same
numbers shown as sRGB are duller. So by default (`COLOR_MANAGEMENT=keep`) the cut-out PNG
embeds the input's profile byte for byte and its colour numbers are left alone; with `srgb`
the pixels are converted from the embedded profile to sRGB before matting and the cut-out has
no profile (what a viewer without colour management, or a web page, shows correctly).

A profile that cannot describe the cut-out (CMYK or grey: the cut-out is RGB) is always
converted to sRGB, and one LittleCMS cannot parse is dropped: embedding either would be
wrong, and refusing the photo over its metadata would help nobody.
"""

from __future__ import annotations

import io
import struct
import zlib
from enum import StrEnum

from PIL import Image, ImageCms

__all__ = [
    "PNG_ICC_NAME",
    "ColorManagement",
    "profile_space",
    "to_srgb",
    "with_icc",
]

PNG_ICC_NAME = b"ICC Profile"
"""The iCCP chunk's profile name (what Pillow writes too; readers ignore it)."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = len(_PNG_SIGNATURE) + 4 + 4 + 13 + 4
"""Signature, then IHDR's length, type, 13 data bytes and CRC: iCCP must follow it."""
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class ColorManagement(StrEnum):
    """`COLOR_MANAGEMENT`: what happens to an input's embedded ICC profile."""

    KEEP = "keep"
    """Embed the input's RGB profile in the cut-out, pixels untouched (the default)."""
    SRGB = "srgb"
    """Convert the pixels to sRGB before matting; the cut-out carries no profile."""


def _parse(icc: bytes) -> ImageCms.ImageCmsProfile | None:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def profile_space(icc: bytes) -> str | None:
    """The profile's data colour space ("RGB", "GRAY", "CMYK", …), None if unparseable."""
    profile = _parse(icc)
    if profile is None:
        return None
    return str(profile.profile.xcolor_space).strip() or None


def to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """`im` converted from `icc` to sRGB, as "RGB" or "RGBA" (alpha passed through); None
    when the profile or the mode does not allow it (the caller then goes on unconverted)."""
    profile = _parse(icc)
    if profile is None:
        return None
    alpha = im.getchannel("A") if "A" in im.getbands() else None
    base = {"RGBA": "RGB", "LA": "L", "PA": "RGB", "P": "RGB", "La": "L", "RGBa": "RGB"}.get(
        im.mode, im.mode
    )
    try:
        source = im if im.mode == base else im.convert(base)
        converted = ImageCms.profileToProfile(source, profile, _SRGB, outputMode="RGB")
    except (OSError, ValueError, ImageCms.PyCMSError):
        return None
    if converted is None:  # only with inPlace=True; typed as Optional
        return None
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def with_icc(png: bytes, icc: bytes | None) -> bytes:
    """`png` with an iCCP chunk holding `icc` right after IHDR; unchanged when `icc` is None.

    Works on any encoder's PNG (8- or 16-bit, Pillow's or OpenCV's), so encoders need not know
    about profiles. Neither writes an sRGB or iCCP chunk of its own, which the PNG spec would
    forbid beside ours.
    """
    if icc is None:
        return png
    if not png.startswith(_PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG with IHDR first")
    chunk = _chunk(b"iCCP", PNG_ICC_NAME + b"\x00\x00" + zlib.compress(icc))
    return png[:_IHDR_END] + chunk + png[_IHDR_END:]
