"""`.onnx` models: onnxruntime on CUDA (capped at GPU_MEMORY_FRACTION) when present; on CPU,
OpenVINO when installed (`ONNX_CPU_RUNTIME`), else onnxruntime.

OpenVINO reads the same .onnx file. At bf16 (`CPU_PRECISION`; `auto` takes it where the CPU
has bf16 instructions) it runs U²-Net about 1.8× faster than onnxruntime's f32 on an
AVX-512 BF16 CPU and stays within rembg's answers (tests/matting_worker/test_rembg_parity.py,
BENCHMARKS.md).

Throughput on OpenVINO (issue 14, point 2): one single-threaded stream per core, up to
OPENVINO_MAX_STREAMS, and a batch's images run on them at once (an AsyncInferQueue). A small
graph like U²-Net-p at 320×320 keeps one core busy far better than it splits across two, so
streams beat one request on every thread. The compiled model is cached (OPENVINO_CACHE_DIR,
keyed by the graph's content), so a process's start skips the compile.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from matting_worker.engines.base import EngineError
from matting_worker.engines.device import (
    cpu_threads,
    onnx_providers,
    onnxruntime_has_cuda,
    openvino_cache_dir,
    openvino_precision,
)
from matting_worker.engines.learned import FloatArray, LearnedEngine
from matting_worker.engines.presets import Preset
from shared.settings import get_settings

__all__ = ["OnnxEngine"]

log = logging.getLogger(__name__)

_OOM_MARKERS = ("out of memory", "failed to allocate memory", "cudnn_status_alloc_failed")
_RVM_STATES = ("r1i", "r2i", "r3i", "r4i")

OPENVINO_MAX_STREAMS = 4
"""Streams (each one thread, its own buffers) OpenVINO runs at most: a worker's batch of a
batch-1 graph is FIXED_BATCH_IMAGES images, so more streams would sit idle and only add
memory; below it, one stream per thread this process may use."""

Inputs = dict[str, tuple[list[Any], type[np.floating[Any]]]]
"""Input name → (shape with None for a free axis, dtype), in the model's order."""


def _dtype(onnx_type: str) -> type[np.floating[Any]]:
    return np.float16 if onnx_type == "tensor(float16)" else np.float32


class OnnxEngine(LearnedEngine):
    kind = "onnx"

    def __init__(self, name: str, path: Path, preset: Preset) -> None:
        super().__init__(name, path, preset)
        self.session: Any = None
        self._ov_request: Any = None
        """OpenVINO's infer request when the model runs there (`_run` runs under the lock)."""
        self._ov_queue: Any = None
        """OpenVINO's AsyncInferQueue, one request per stream, when it has more than one."""
        self._input = ""
        self._input_dtype: type[np.floating[Any]] = np.float32
        self._extra: dict[str, Any] = {}
        self._output = ""

    @property
    def handle(self) -> Any:
        """What the runtime opened: the onnxruntime session or OpenVINO's infer request;
        None before loading and after `unload`."""
        return self.session if self.session is not None else self._ov_request

    def _load(self) -> None:
        runtime = get_settings().onnx_cpu_runtime
        if runtime != "onnxruntime" and not onnxruntime_has_cuda():
            try:
                import openvino  # noqa: F401 — only whether it is there
            except ImportError:
                if runtime == "openvino":
                    raise EngineError("ONNX_CPU_RUNTIME=openvino but openvino is not "
                                      "installed (pip install openvino)") from None
            else:
                self._load_openvino()
                return
        import onnxruntime as ort

        providers, opts = onnx_providers()
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:
            raise EngineError(f"cannot load ONNX model {self.path.name}: {exc}") from exc
        active = self.session.get_providers()
        self.device = "cuda" if active and active[0] == "CUDAExecutionProvider" else "cpu"
        self.runtime, self.precision = "onnxruntime", "f32"
        inputs: Inputs = {i.name: (list(i.shape), _dtype(i.type))
                          for i in self.session.get_inputs()}
        self._bind(inputs, [o.name for o in self.session.get_outputs()])
        log.info("%s: onnxruntime on %s at f32, input %s %s", self.name, self.device,
                 self._input, inputs[self._input][0])

    def _load_openvino(self) -> None:
        import openvino as ov

        core = ov.Core()
        cache = openvino_cache_dir()
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        precision = openvino_precision(core)
        threads = cpu_threads()
        streams = max(1, min(threads, OPENVINO_MAX_STREAMS))
        try:
            model = core.read_model(str(self.path))
            compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": precision,
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": streams,
                "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
            })
        except Exception as exc:
            raise EngineError(f"cannot load ONNX model {self.path.name}: {exc}") from exc
        inputs: Inputs = {}
        for port in compiled.inputs:
            dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            half = port.get_element_type() == ov.Type.f16
            inputs[port.get_any_name()] = (dims, np.float16 if half else np.float32)
        self._bind(inputs, [o.get_any_name() for o in compiled.outputs])
        self._ov_request = compiled.create_infer_request()
        if streams > 1:
            self._ov_queue = ov.AsyncInferQueue(compiled, streams)
        self.parallel_parts = streams
        self.device, self.runtime, self.precision = "cpu", "openvino", precision
        log.info("%s: OpenVINO on cpu at %s, %d threads in %d streams, input %s %s, cache %s",
                 self.name, precision, threads, streams, self._input,
                 inputs[self._input][0], cache or "off")

    def _bind(self, inputs: Inputs, outputs: list[str]) -> None:
        """The image input, the extra inputs and the matte output, by the preset."""
        first = next(iter(inputs))
        self._input = "src" if self.preset.recurrent and "src" in inputs else first
        self._input_dtype = inputs[self._input][1]
        self._inspect_shape(inputs[self._input][0])
        for name, (_, dtype) in inputs.items():
            if name == self._input:
                continue
            if self.preset.recurrent and name in (*_RVM_STATES, "downsample_ratio"):
                self._extra[name] = dtype
                continue
            raise EngineError(
                f"model {self.path.name} wants an input {name!r} besides the image; "
                "only RobustVideoMatting's recurrent inputs are known (preset 'rvm')"
            )
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

    def _inspect_shape(self, shape: list[Any]) -> None:
        if len(shape) != 4:
            raise EngineError(f"model {self.path.name} input has shape {shape}; want 4-D")
        if self.preset.layout == "auto" and shape[3] == 3 and shape[1] != 3:
            self.layout = "nhwc"
        self.fixed_batch = isinstance(shape[0], int) and shape[0] == 1
        h, w = (shape[1], shape[2]) if self.layout == "nhwc" else (shape[2], shape[3])
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            self.static_hw = (h, w)

    def _feed(self, batch: FloatArray) -> dict[str, Any]:
        """The image batch in the model's dtype, plus RVM's extra inputs."""
        feed: dict[str, Any] = {self._input: batch.astype(self._input_dtype, copy=False)}
        if self._extra:
            n = len(batch)
            h, w = batch.shape[1:3] if self.layout == "nhwc" else batch.shape[2:4]
            for name, dtype in self._extra.items():
                if name == "downsample_ratio":
                    feed[name] = np.array([self.rvm_ratio(h, w)], dtype=np.float32)
                else:
                    feed[name] = np.zeros((n, 1, 1, 1), dtype=dtype)
        return feed

    def _run(self, batch: FloatArray) -> npt.NDArray[Any]:
        feed = self._feed(batch)
        if self._ov_request is not None:
            result = self._ov_request.infer(feed)
            # The request reuses its output buffer on the next call: copy it out.
            return np.array(result[self._output], dtype=np.float32, copy=True)
        out = self.session.run([self._output], feed)[0]
        return np.asarray(out, dtype=np.float32)

    def _run_parts(self, parts: list[FloatArray]) -> list[npt.NDArray[Any]]:
        """On OpenVINO with several streams, the parts at once, one per free stream."""
        if self._ov_queue is None or len(parts) < 2:
            return super()._run_parts(parts)
        queue, name = self._ov_queue, self._output
        outs: list[npt.NDArray[Any] | None] = [None] * len(parts)

        def done(request: Any, index: int) -> None:
            # The request's buffer is reused by its next part: copy it out here.
            outs[index] = np.array(request.get_tensor(name).data, dtype=np.float32,
                                   copy=True)

        queue.set_callback(done)
        for i, part in enumerate(parts):
            queue.start_async(self._feed(part), i)
        queue.wait_all()
        missing = [i for i, o in enumerate(outs) if o is None]
        if missing:
            raise EngineError(f"model {self.name!r} gave no output for {len(missing)} of "
                              f"{len(parts)} parts")
        return [o for o in outs if o is not None]

    def _is_oom(self, exc: BaseException) -> bool:
        text = str(exc).lower()
        return any(marker in text for marker in _OOM_MARKERS)
