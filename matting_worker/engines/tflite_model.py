"""`.tflite` models on LiteRT (ai-edge-litert's `Interpreter`), on the CPU.

The input tensor is resized to the batch when the graph allows it (MediaPipe's models do);
otherwise images go through one by one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import cpu_threads
from matting_worker.engines.learned import FloatArray, LearnedEngine
from matting_worker.engines.presets import Preset

__all__ = ["TFLiteEngine"]

log = logging.getLogger(__name__)


class TFLiteEngine(LearnedEngine):
    kind = "tflite"

    def __init__(self, name: str, path: Path, preset: Preset) -> None:
        super().__init__(name, path, preset)
        self.interpreter: Any = None
        self._in = 0
        self._out = 0
        self._batch = 1
        self._dtype: Any = np.float32

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=cpu_threads())
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise EngineError(f"cannot load TFLite model {self.path.name}: {exc}") from exc
        self.runtime = "litert"
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise EngineError(f"model {self.path.name} has {len(inputs)} inputs; want 1 image")
        detail = inputs[0]
        shape = [int(v) for v in detail["shape"]]
        if len(shape) != 4:
            raise EngineError(f"model {self.path.name} input has shape {shape}; want 4-D")
        if detail["dtype"] not in (np.float32, np.float16):
            raise EngineError(
                f"model {self.path.name} takes {np.dtype(detail['dtype']).name} input; "
                "quantised models are not supported"
            )
        self._dtype = detail["dtype"]
        if self.preset.layout == "auto":
            self.layout = "nchw" if shape[1] == 3 and shape[3] != 3 else "nhwc"
        h, w = (shape[1], shape[2]) if self.layout == "nhwc" else (shape[2], shape[3])
        self.static_hw = (h, w)
        self._in = int(detail["index"])
        try:
            self._out = int(outputs[self.preset.output]["index"])
        except IndexError:
            raise EngineError(
                f"model {self.path.name} has {len(outputs)} outputs; "
                f"preset wants output {self.preset.output}"
            ) from None
        self._batch = shape[0]
        log.info("%s: LiteRT on cpu, input %s", self.name, shape)

    def _resize(self, n: int) -> None:
        if n == self._batch:
            return
        shape = [n, *self.interpreter.get_input_details()[0]["shape"][1:]]
        self.interpreter.resize_tensor_input(self._in, shape)
        self.interpreter.allocate_tensors()
        self._batch = n

    def _run(self, batch: FloatArray) -> npt.NDArray[Any]:
        n = len(batch)
        if not self.fixed_batch:
            try:
                self._resize(n)
            except Exception as exc:  # a graph with a hard batch of 1: go one by one
                log.info("%s: batch axis not resizable (%s); running per image", self.name, exc)
                self.fixed_batch = True
                self._resize(1)
        if self.fixed_batch and n > 1:
            return np.concatenate([self._run(batch[i : i + 1]) for i in range(n)])
        self.interpreter.set_tensor(self._in, batch.astype(self._dtype, copy=False))
        self.interpreter.invoke()
        out: npt.NDArray[Any] = np.array(self.interpreter.get_tensor(self._out), copy=True)
        return out
