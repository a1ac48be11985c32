"""`.pt` / `.torchscript` models on torch: CUDA within its memory share, fp16 where it holds.

A pickled state_dict cannot run without its model's Python code, so only TorchScript files
(torch.jit.script / trace, then save) are taken, with a message that says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import configure_torch
from matting_worker.engines.learned import FloatArray, LearnedEngine
from matting_worker.engines.presets import Preset

__all__ = ["TorchEngine", "is_torch_oom"]

log = logging.getLogger(__name__)


def is_torch_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class TorchEngine(LearnedEngine):
    kind = "torchscript"

    def __init__(self, name: str, path: Path, preset: Preset) -> None:
        super().__init__(name, path, preset)
        self.model: Any = None
        self.half = False

    def _load(self) -> None:
        import torch

        self.device = configure_torch()
        try:
            model = torch.jit.load(  # type: ignore[no-untyped-call]
                str(self.path), map_location=self.device
            )
        except Exception as exc:
            raise EngineError(
                f"cannot load {self.path.name} as TorchScript ({exc}); a state_dict needs its "
                "model code: export with torch.jit.script or torch.jit.trace, then save"
            ) from exc
        self.model = model.eval()
        if self.device == "cuda" and self.preset.half:
            self.half = self._try_half()
        self.runtime, self.precision = "torch", "f16" if self.half else "f32"
        log.info("%s: torch on %s%s", self.name, self.device, " fp16" if self.half else "")

    def _try_half(self) -> bool:
        """Half precision if one small forward pass in it works and gives finite numbers."""
        import torch

        h, w = self.target_size(256, 256)
        shape = (1, h, w, 3) if self.layout == "nhwc" else (1, 3, h, w)
        probe = np.zeros(shape, dtype=np.float32)
        try:
            self.model.half()
            with torch.inference_mode():
                out = self._call(torch.from_numpy(probe).to(self.device, torch.float16))
            if bool(torch.isfinite(out).all()):
                return True
            log.warning("%s: fp16 gives non-finite output; staying in fp32", self.name)
        except Exception as exc:
            log.warning("%s: fp16 not possible (%s); staying in fp32", self.name, exc)
        self.model.float()
        return False

    def _call(self, x: Any) -> Any:
        if self.preset.recurrent:
            h, w = (x.shape[1], x.shape[2]) if self.layout == "nhwc" else (x.shape[2], x.shape[3])
            out = self.model(x, None, None, None, None, self.rvm_ratio(int(h), int(w)))
        else:
            out = self.model(x)
        return self._select(out)

    def _select(self, out: Any) -> Any:
        if isinstance(out, dict):
            for key in ("pha", "matte", "alpha", "out", "output"):
                if key in out:
                    return out[key]
            out = list(out.values())
        if isinstance(out, list | tuple):
            try:
                out = out[self.preset.output]
            except IndexError:
                raise EngineError(
                    f"model {self.path.name} returned {len(out)} outputs; "
                    f"preset wants output {self.preset.output}"
                ) from None
            return self._select(out) if isinstance(out, list | tuple | dict) else out
        return out

    def _run(self, batch: FloatArray) -> npt.NDArray[Any]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        if self.half:
            x = x.half()
        with torch.inference_mode():
            out = self._call(x)
        result: npt.NDArray[Any] = out.float().cpu().numpy()
        return result

    def _is_oom(self, exc: BaseException) -> bool:
        return is_torch_oom(exc)

    def _after_oom(self, batch_size: int) -> None:
        super()._after_oom(batch_size)
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
