"""Tiny real models for the engine tests: a few conv layers, saved as TorchScript and ONNX.

They are untrained but deterministic, so the tests compare runtimes against each other and
against numbers computed here, never against stored answers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "FakeRVM",
    "RedChannel",
    "ScriptRVM",
    "TinyNet",
    "TupleNet",
    "export_onnx",
    "gradient_image",
    "save_script",
    "save_trace",
]


class TinyNet(nn.Module):
    """conv → relu → conv → sigmoid: a minimal segmenter."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, width, 3, padding=1)
        self.b = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.b(torch.relu(self.a(x))))


class RedChannel(nn.Module):
    """Output = the normalised red channel, so preprocessing is visible in the matte."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.c.weight.zero_()
            self.c.weight[0, 0] = 1.0
            self.c.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x)


class TupleNet(nn.Module):
    """MODNet's shape of answer: (semantic, detail, matte); the matte is the last."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        matte = self.net(x)
        return torch.zeros_like(matte), torch.zeros_like(matte), matte


class FakeRVM(nn.Module):
    """RobustVideoMatting's interface: (src, r1i..r4i, downsample_ratio) → (fgr, pha, r1o..r4o)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(
        self, src: torch.Tensor, r1i: torch.Tensor, r2i: torch.Tensor, r3i: torch.Tensor,
        r4i: torch.Tensor, downsample_ratio: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # The states and the ratio take part (times zero) so the exporter keeps them as inputs.
        keep = (r1i.mean() + r2i.mean() + r3i.mean() + r4i.mean() + downsample_ratio.sum()) * 0
        pha = self.net(src) + keep
        return src, pha, r1i, r2i, r3i, r4i


class ScriptRVM(nn.Module):
    """RVM's TorchScript signature: optional states, a float ratio, a list of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(
        self, src: torch.Tensor, r1: torch.Tensor | None = None, r2: torch.Tensor | None = None,
        r3: torch.Tensor | None = None, r4: torch.Tensor | None = None,
        downsample_ratio: float = 1.0,
    ) -> list[torch.Tensor]:
        assert r1 is None and r4 is None
        pha = self.net(src) * 0.0 + downsample_ratio  # the ratio is visible in the matte
        return [src, pha, pha, pha, pha, pha]


def save_script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated, not gone
        torch.jit.script(module.eval()).save(str(path))  # type: ignore[no-untyped-call]
    return path


def save_trace(module: nn.Module, path: Path, size: int = 32) -> Path:
    example = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(module.eval(), example).save(str(path))  # type: ignore[no-untyped-call]
    return path


def export_onnx(
    module: nn.Module, path: Path, *, dynamic: bool = True, size: int = 64,
    channels_last: bool = False,
) -> Path:
    """Legacy (TorchScript-based) exporter: needs no onnxscript."""
    shape = (1, size, size, 3) if channels_last else (1, 3, size, size)
    x = torch.rand(*shape)
    target: nn.Module = module.eval()
    if channels_last:
        inner = target

        class _NHWC(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, t: torch.Tensor) -> torch.Tensor:
                return self.inner(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

        target = _NHWC()
    axes = {"input": {0: "batch", 1: "h", 2: "w"} if channels_last else {0: "batch", 2: "h",
                                                                           3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            target, (x,), str(path), dynamo=False, input_names=["input"],
            output_names=["output"], dynamic_axes=axes if dynamic else None,
        )
    return path


def gradient_image(h: int, w: int, lo: int = 50, hi: int = 150) -> np.ndarray:
    """Red ramps left to right from lo to hi; green and blue constant."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(lo, hi, w).round().astype(np.uint8)[None, :]
    img[..., 1] = 100
    img[..., 2] = 30
    return img


def noise_images(seed: int, *sizes: tuple[int, int]) -> list[np.ndarray]:
    """RGB noise images of the given (height, width), the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
