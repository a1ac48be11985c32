"""The decoders beyond Pillow's own: HEIF/HEIC through pillow-heif, AVIF through Pillow.

Registering is a side effect on Pillow's global plugin table, done once at import by
`shared.imaging` (every decoder goes through it), so the gateway's header check, the workers'
decode and `mattepipe matte` see the same formats. Pillow ≥ 11.2 reads AVIF itself (libavif in
its wheels); pillow-heif 1.x no longer ships an AVIF opener, so nothing else is needed for it.
Depth maps, auxiliary images and embedded thumbnails are never read: a cut-out needs the
primary image only, and every extra item parsed is attack surface.
"""

from __future__ import annotations

from PIL import features
from pillow_heif import register_heif_opener

__all__ = ["PLUGIN_FORMATS", "register_plugins"]

PLUGIN_FORMATS = frozenset({"HEIF", "AVIF"})
"""Pillow format names these plugins add to the accepted list (`Image.format`)."""

_registered = False


def register_plugins() -> None:
    """Idempotent; raises ImportError when this Pillow cannot read AVIF."""
    global _registered
    if _registered:
        return
    register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
    if not features.check("avif"):  # pragma: no cover - Pillow < 11.2 or built without libavif
        raise ImportError("this Pillow cannot read AVIF: install pillow>=11.2")
    _registered = True
