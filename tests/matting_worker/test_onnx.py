from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from matting_worker.engines.base import EngineError
from matting_worker.engines.onnx_model import OnnxEngine
from matting_worker.engines.registry import create_engine
from tests.matting_worker.tiny_models import (
    FakeRVM,
    RedChannel,
    TinyNet,
    export_onnx,
    gradient_image,
    noise_images,
)

# torch's legacy ONNX exporter (no onnxscript needed) warns that it is legacy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_u2netp_preset_applies(tmp_path: Path) -> None:
    """Same graph, two names: rembg's u2netp conventions (÷max, 320², min-max) vs generic."""
    export_onnx(RedChannel(), tmp_path / "u2netp.onnx")
    export_onnx(RedChannel(), tmp_path / "custom.onnx")
    img = gradient_image(40, 90)
    zoo = create_engine("u2netp", tmp_path)
    assert isinstance(zoo, OnnxEngine)
    zoo.load()
    assert zoo.preset.name == "u2net"
    assert zoo.target_size(40, 90) == (320, 320)
    alpha = zoo.predict([img])[0].alpha
    assert alpha.shape == (40, 90)
    # min-max stretches the red ramp 50..150 to exactly 0..1
    assert alpha.min() == pytest.approx(0.0, abs=0.02)
    assert alpha.max() == pytest.approx(1.0, abs=0.02)
    expected = np.linspace(0, 1, 90)[None, :].repeat(40, 0)
    assert np.abs(alpha - expected)[:, 3:-3].max() < 0.05

    generic = create_engine("custom", tmp_path)
    g = generic.predict([img])[0].alpha
    # generic: ImageNet normalisation, then a sigmoid because the output leaves [0, 1]
    red = np.linspace(50, 150, 90) / 255.0
    want = 1 / (1 + np.exp(-(red - 0.485) / 0.229))
    assert np.abs(g[20] - want)[3:-3].max() < 0.03
    assert g.min() > 0.2 and g.max() < 0.65  # not stretched


def test_json_override_beside_model(tmp_path: Path) -> None:
    export_onnx(RedChannel(), tmp_path / "u2netp.onnx")
    (tmp_path / "u2netp.json").write_text(json.dumps(
        {"scale": "255", "mean": [0, 0, 0], "std": [1, 1, 1], "minmax": False,
         "input_size": [48, 64]}))
    engine = create_engine("u2netp", tmp_path)
    img = gradient_image(30, 70)
    alpha = engine.predict([img])[0].alpha
    assert engine.target_size(30, 70) == (48, 64)
    # now the matte is plain red / 255
    assert np.abs(alpha[15] - img[15, :, 0] / 255.0)[3:-3].max() < 0.03


def test_batch_of_different_sizes(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "tiny.onnx")
    engine = create_engine("tiny", tmp_path)
    images = noise_images(1, (30, 50), (64, 20), (17, 17))
    together = engine.predict(images)
    assert [m.alpha.shape for m in together] == [(30, 50), (64, 20), (17, 17)]
    for im, m in zip(images, together, strict=True):
        alone = engine.predict([im])[0]
        np.testing.assert_allclose(m.alpha, alone.alpha, atol=1e-5)
        assert m.alpha.dtype == np.float32
        assert m.alpha.min() >= 0.0 and m.alpha.max() <= 1.0
    assert not np.allclose(together[0].alpha, together[0].alpha.mean())  # not a constant


def test_fixed_batch_and_size_runs_image_by_image(tmp_path: Path) -> None:
    export_onnx(TinyNet(), tmp_path / "fixed.onnx", dynamic=False, size=48)
    engine = create_engine("fixed", tmp_path)
    assert isinstance(engine, OnnxEngine)
    engine.load()
    assert engine.fixed_batch and engine.static_hw == (48, 48)
    images = noise_images(1, (30, 50), (100, 20), (48, 48))
    mattes = engine.predict(images)
    assert [m.alpha.shape for m in mattes] == [(30, 50), (100, 20), (48, 48)]
    np.testing.assert_allclose(mattes[1].alpha, engine.predict([images[1]])[0].alpha, atol=1e-6)


def test_channels_last_model_is_detected(tmp_path: Path) -> None:
    export_onnx(RedChannel(), tmp_path / "nhwc.onnx", channels_last=True, dynamic=False, size=32)
    (tmp_path / "nhwc.json").write_text('{"mean": [0,0,0], "std": [1,1,1]}')
    engine = create_engine("nhwc", tmp_path)
    assert isinstance(engine, OnnxEngine)
    img = gradient_image(32, 32)
    alpha = engine.predict([img])[0].alpha
    assert engine.layout == "nhwc"
    assert np.abs(alpha - img[..., 0] / 255.0).max() < 0.01


def test_rvm_loads_with_zero_states(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "rvm_mobilenetv3_fp32.onnx"
    x = torch.rand(1, 3, 64, 64)
    states = [torch.zeros(1, 1, 1, 1)] * 4
    ratio = torch.tensor([0.25])
    torch.onnx.export(
        FakeRVM().eval(), (x, *states, ratio), str(path), dynamo=False,
        input_names=["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"],
        output_names=["fgr", "pha", "r1o", "r2o", "r3o", "r4o"],
        dynamic_axes={"src": {0: "b", 2: "h", 3: "w"}, **{f"r{i}i": {0: "b"} for i in
                                                          range(1, 5)}},
    )
    engine = create_engine("rvm_mobilenetv3_fp32", tmp_path)
    images = noise_images(1, (40, 60), (40, 60))
    mattes = engine.predict(images)
    assert engine.preset.name == "rvm"
    assert [m.alpha.shape for m in mattes] == [(40, 60), (40, 60)]
    tiny = create_engine("tiny", _export_tiny(tmp_path))
    np.testing.assert_allclose(mattes[0].alpha, tiny.predict(images[:1])[0].alpha, atol=1e-4)


def _export_tiny(tmp_path: Path) -> Path:
    d = tmp_path / "tiny"
    d.mkdir()
    export_onnx(TinyNet(), d / "tiny.onnx")
    (d / "tiny.json").write_text('{"preset": "rvm", "recurrent": false, "output": 0}')
    return d


def test_unknown_extra_input_is_a_clear_error(tmp_path: Path) -> None:
    import torch

    class TwoInputs(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a[:, :1] * b

    torch.onnx.export(TwoInputs(), (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 8)),
                      str(tmp_path / "two.onnx"), dynamo=False, input_names=["image", "mask"])
    engine = create_engine("two", tmp_path)
    with pytest.raises(EngineError, match="'mask'"):
        engine.load()


def test_not_an_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"this is not a model")
    with pytest.raises(EngineError, match=r"cannot load ONNX model broken\.onnx"):
        create_engine("broken", tmp_path).load()
