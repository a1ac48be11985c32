"""Small ONNX models with the I/O of each rembg zoo family, for the agreement test.

Each has the family's input name and static 1×3×S×S shape, its output order (the matte, or
the cloth classes, first, decoys after) and its last step (sigmoid in the graph or a logit
out), as rembg's sessions (rembg/sessions/*.py, 2.0.86) expect. The body is a strided conv, a
ReLU, a conv and a bilinear upsample: untrained, deterministic, and smooth like a real
segmenter's answer, so 8-bit rounding and resampling differences show as they would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["FAMILIES", "Family", "build_zoo_model", "scene"]

STRIDE = 4
WIDTH = 8


@dataclass(frozen=True)
class Family:
    rembg: str
    """rembg's model name: its session, and the file name `<rembg>.onnx` it looks for."""
    preset: str
    """The preset mattepipe picks from that file name."""
    input_name: str
    size: int
    classes: int = 1
    """Output channels: 1 for a matte, 4 for U²-Net cloth (background + three garments)."""
    sigmoid: bool = True
    """Sigmoid inside the graph; False: a logit out (BiRefNet, which rembg sigmoids)."""
    outputs: int = 3


FAMILIES: tuple[Family, ...] = (
    Family("u2net", "u2net", "input.1", 320, outputs=7),
    Family("u2netp", "u2net", "input.1", 320, outputs=7),
    Family("u2net_human_seg", "u2net", "input.1", 320, outputs=7),
    Family("u2net_cloth_seg", "u2net_cloth_seg", "input", 768, classes=4, sigmoid=False),
    Family("silueta", "silueta", "input.1", 320, outputs=7),
    Family("isnet-general-use", "isnet", "input_image", 1024, outputs=6),
    Family("isnet-anime", "isnet-anime", "img", 1024, outputs=6),
    Family("birefnet-general", "birefnet", "input_image", 1024, sigmoid=False, outputs=1),
    Family("birefnet-portrait", "birefnet", "input_image", 1024, sigmoid=False, outputs=1),
    Family("birefnet-massive", "birefnet", "input_image", 1024, sigmoid=False, outputs=1),
    Family("bria-rmbg", "bria-rmbg", "pixel_values", 1024, outputs=1),
    Family("ben_custom", "ben", "input", 1024, outputs=1),
)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def build_zoo_model(path: Path, family: Family, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    k = STRIDE * 2
    w1 = rng.normal(0.0, 1.0 / np.sqrt(3 * k * k), (WIDTH, 3, k, k))
    b1 = rng.normal(0.0, 0.1, WIDTH)
    w2 = rng.normal(0.0, 3.0 / np.sqrt(WIDTH * 9), (family.classes, WIDTH, 3, 3))
    b2 = rng.normal(0.0, 0.2, family.classes)
    size, coarse = family.size, family.size // STRIDE
    nodes = [
        helper.make_node("Conv", [family.input_name, "w1", "b1"], ["h1"], kernel_shape=[k, k],
                         strides=[STRIDE, STRIDE], pads=[k // 2 - 2, k // 2 - 2, 2, 2]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Conv", ["h2", "w2", "b2"], ["logit"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["logit", "", "scales"], ["up"], mode="linear"),
    ]
    last = "up"
    if family.sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["up"], ["sig"]))
        last = "sig"
    names = [f"d{i}" for i in range(family.outputs)]
    nodes.append(helper.make_node("Identity", [last], [names[0]]))
    for i, name in enumerate(names[1:], start=1):
        # Decoys after the matte: a reader that takes the wrong output gets another answer.
        nodes.append(helper.make_node("Mul", [last, f"k{i}"], [name]))
    inits = [
        _init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2),
        _init("scales", np.array([1.0, 1.0, STRIDE, STRIDE])),
        *(_init(f"k{i}", np.array(1.0 / (i + 1))) for i in range(1, family.outputs)),
    ]
    out_shape = [1, family.classes, size, size]
    assert coarse * STRIDE == size
    graph = helper.make_graph(
        nodes, family.rembg,
        [helper.make_tensor_value_info(family.input_name, TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, out_shape) for n in names],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: a lit backdrop, a few soft-edged objects, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = (rng.uniform(60, 200, 3) + (yy / h)[..., None] * rng.uniform(-60, 60, 3)).astype(
        np.float32
    )
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(0.08, 0.3) * min(h, w)
        a = np.clip((r - np.hypot(xx - cx, (yy - cy) * rng.uniform(0.6, 1.6))) / 3.0, 0, 1)
        img = img * (1 - a[..., None]) + a[..., None] * rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
