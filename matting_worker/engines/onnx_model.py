"""`.onnx` models on onnxruntime: CUDA (capped at GPU_MEMORY_FRACTION) when present, else CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import onnx_providers
from matting_worker.engines.learned import FloatArray, LearnedEngine
from matting_worker.engines.presets import Preset

__all__ = ["OnnxEngine"]

log = logging.getLogger(__name__)

_OOM_MARKERS = ("out of memory", "failed to allocate memory", "cudnn_status_alloc_failed")
_RVM_STATES = ("r1i", "r2i", "r3i", "r4i")


def _dtype(onnx_type: str) -> type[np.floating[Any]]:
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


class OnnxEngine(LearnedEngine):
    kind = "onnx"

    def __init__(self, name: str, path: Path, preset: Preset) -> None:
        super().__init__(name, path, preset)
        self.session: Any = None
        self._input = ""
        self._input_dtype: type[np.floating[Any]] = np.float32
        self._extra: dict[str, Any] = {}
        self._output = ""

    def _load(self) -> None:
        import onnxruntime as ort

        providers, opts = onnx_providers()
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            raise EngineError(f"cannot load ONNX model {self.path.name}: {exc}") from exc
        active = self.session.get_providers()
        self.device = "cuda" if active and active[0] == "CUDAExecutionProvider" else "cpu"
        inputs = {i.name: i for i in self.session.get_inputs()}
        main = inputs.get("src") if self.preset.recurrent else None
        main = main or self.session.get_inputs()[0]
        self._input = main.name
        self._input_dtype = _dtype(main.type)
        self._inspect_shape(list(main.shape))
        for extra in inputs.values():
            if extra.name == self._input:
                continue
            if self.preset.recurrent and extra.name in (*_RVM_STATES, "downsample_ratio"):
                self._extra[extra.name] = _dtype(extra.type)
                continue
            raise EngineError(
                f"model {self.path.name} wants an input {extra.name!r} besides the image; "
                "only RobustVideoMatting's recurrent inputs are known (preset 'rvm')"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        if self.preset.recurrent and "pha" in outputs:
            self._output = "pha"
        else:
            try:
                self._output = outputs[self.preset.output]
            except IndexError:
                raise EngineError(
                    f"model {self.path.name} has {len(outputs)} outputs; "
                    f"preset wants output {self.preset.output}"
                ) from None
        log.info("%s: onnxruntime on %s, input %s %s", self.name, self.device, main.name,
                 main.shape)

    def _inspect_shape(self, shape: list[Any]) -> None:
        if len(shape) != 4:
            raise EngineError(f"model {self.path.name} input has shape {shape}; want 4-D")
        if self.preset.layout == "auto" and shape[3] == 3 and shape[1] != 3:
            self.layout = "nhwc"
        self.fixed_batch = isinstance(shape[0], int) and shape[0] == 1
        h, w = (shape[1], shape[2]) if self.layout == "nhwc" else (shape[2], shape[3])
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            self.static_hw = (h, w)

    def _run(self, batch: FloatArray) -> npt.NDArray[Any]:
        feed: dict[str, Any] = {self._input: batch.astype(self._input_dtype, copy=False)}
        if self._extra:
            n = len(batch)
            h, w = batch.shape[1:3] if self.layout == "nhwc" else batch.shape[2:4]
            for name, dtype in self._extra.items():
                if name == "downsample_ratio":
                    feed[name] = np.array([self.rvm_ratio(h, w)], dtype=np.float32)
                else:
                    feed[name] = np.zeros((n, 1, 1, 1), dtype=dtype)
        out = self.session.run([self._output], feed)[0]
        return np.asarray(out, dtype=np.float32)

    def _is_oom(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return any(marker in text for marker in _OOM_MARKERS)
