"""U²-Net-p's architecture (Qin et al. 2020, 1.13 M parameters), exported as rembg's u2netp.onnx
is laid out: input `input.1` 1×3×320×320, seven sigmoid outputs d0…d6, the fused d0 first.

No weights can be downloaded here, so they are random (seeded, BatchNorm at its identity
statistics): the work per image — the figure a speed comparison needs — is the real model's.
Run as a script (`python bench/u2netp_arch.py OUT.onnx`) so torch loads only in that process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["U2NETP", "export"]


class REBNCONV(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _up(src: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(src, size=like.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of `levels` levels; `flat` is RSU-4F (dilations instead of pooling)."""

    def __init__(self, levels: int, cin: int, mid: int, cout: int, flat: bool = False) -> None:
        super().__init__()
        self.flat = flat
        self.conv_in = REBNCONV(cin, cout)
        dil = [2 ** i for i in range(levels)] if flat else [1] * (levels - 1) + [2]
        self.enc = nn.ModuleList(
            [REBNCONV(cout, mid, dil[0])] + [REBNCONV(mid, mid, d) for d in dil[1:]]
        )
        self.dec = nn.ModuleList(
            [REBNCONV(2 * mid, mid, dil[i]) for i in range(levels - 2, 0, -1)]
            + [REBNCONV(2 * mid, cout, dil[0])]
        )
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hin = self.conv_in(x)
        skips = []
        h = hin
        for i, conv in enumerate(self.enc):
            h = conv(h)
            skips.append(h)
            if not self.flat and i < len(self.enc) - 2:
                h = self.pool(h)
        h = skips.pop()
        for conv in self.dec:
            skip = skips.pop()
            if not self.flat and h.shape[2:] != skip.shape[2:]:
                h = _up(h, skip)
            h = conv(torch.cat([h, skip], 1))
        out: torch.Tensor = h + hin
        return out


class U2NETP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        c, m = 64, 16
        self.stages = nn.ModuleList([
            RSU(7, 3, m, c), RSU(6, c, m, c), RSU(5, c, m, c), RSU(4, c, m, c),
            RSU(4, c, m, c, flat=True), RSU(4, c, m, c, flat=True),
        ])
        self.decoders = nn.ModuleList([
            RSU(4, 2 * c, m, c, flat=True), RSU(4, 2 * c, m, c), RSU(5, 2 * c, m, c),
            RSU(6, 2 * c, m, c), RSU(7, 2 * c, m, c),
        ])
        self.sides = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for _ in range(6)])
        self.fuse = nn.Conv2d(6, 1, 1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = []
        h = x
        for i, stage in enumerate(self.stages):
            h = stage(h)
            enc.append(h)
            if i < len(self.stages) - 1:
                h = self.pool(h)
        dec = [enc.pop()]  # stage 6
        h = dec[0]
        for stage in self.decoders:
            skip = enc.pop()
            h = stage(torch.cat([_up(h, skip), skip], 1))
            dec.append(h)
        # dec: hx6, hx5d, hx4d, hx3d, hx2d, hx1d → sides d6 … d1, all at full size
        full = dec[-1]
        sides = [_up(side(d), full) for side, d in zip(self.sides, reversed(dec), strict=True)]
        d0 = self.fuse(torch.cat(sides, 1))
        return tuple(torch.sigmoid(d) for d in (d0, *sides))


def export(path: Path) -> Path:
    torch.manual_seed(0)
    model = U2NETP().eval()
    x = torch.zeros(1, 3, 320, 320)
    torch.onnx.export(model, (x,), str(path), input_names=["input.1"],
                      output_names=[f"d{i}" for i in range(7)], opset_version=17,
                      dynamo=False)
    return path


if __name__ == "__main__":
    out = export(Path(sys.argv[1]))
    n = sum(p.numel() for p in U2NETP().parameters())
    print(f"{out}: {n / 1e6:.2f} M parameters")
