"""`portrait`: MediaPipe's selfie segmenter finds the person, the band solver makes the matte.

The model sees 256×256, so its mask alone would be an upscaled blob; its probability map,
resized to the image, only seeds `refine`, which solves the edge band at full resolution so
hair and shoulders come out as a real matte. The weights ship with the code (Apache-2.0).
"""

from __future__ import annotations

from pathlib import Path

from matting_worker.engines.presets import PRESETS
from matting_worker.engines.tflite_model import TFLiteEngine

__all__ = ["PORTRAIT_MODEL", "PortraitEngine"]

PORTRAIT_MODEL = Path(__file__).resolve().parent / "models" / "selfie_segmentation.tflite"


class PortraitEngine(TFLiteEngine):
    def __init__(self) -> None:
        super().__init__("portrait", PORTRAIT_MODEL, PRESETS["selfie"])
        # The refinement at full resolution dominates; a few images per batch keep latency
        # even while the 256×256 model would take many more.
        self.max_batch_size = 4
