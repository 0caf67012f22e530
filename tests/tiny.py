"""Tiny SR models built in the tests, exported to ONNX both ways (legacy opset 17 and dynamo)."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn


class TinySR(nn.Module):
    """conv -> LeakyReLU -> conv -> PixelShuffle, plus a bilinear skip and a shared mean shift:
    the shape of most SR networks at a size that runs in milliseconds."""

    def __init__(self, scale: int = 2, feats: int = 8, channels: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.head = nn.Conv2d(channels, feats, 3, padding=1)
        self.body = nn.Conv2d(feats, channels * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.45))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: Tensor) -> Tensor:
        skip = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        h = nn.functional.leaky_relu(self.head(x - self.mean), 0.2)
        return self.shuffle(self.body(h)) + skip


class Scaled(nn.Module):
    """Wraps a [0,1] model into another convention (0-255, BGR, NHWC) for convention tests."""

    def __init__(self, inner: nn.Module, *, value_range: float = 1.0, bgr: bool = False, nhwc: bool = False):
        super().__init__()
        self.inner, self.r, self.bgr, self.nhwc = inner, value_range, bgr, nhwc

    def forward(self, x: Tensor) -> Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        x = x / self.r
        if self.bgr:
            x = x.flip(1)
        y = self.inner(x)
        if self.bgr:
            y = y.flip(1)
        y = y * self.r
        return y.permute(0, 2, 3, 1) if self.nhwc else y


def export(module: nn.Module, path: Path, *, dynamo: bool = False, channels: int = 3,
           nhwc: bool = False, metadata: dict[str, str] | None = None) -> Path:
    module.eval()
    x = torch.rand(1, 16, 16, channels) if nhwc else torch.rand(1, channels, 16, 16)
    hw = (1, 2) if nhwc else (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            b, h, w = (torch.export.Dim(n) for n in ("batch", "height", "width"))
            shapes = {"x": {0: b, hw[0]: h, hw[1]: w}}
            torch.onnx.export(module, (x,), str(path), dynamo=True, dynamic_shapes=shapes,
                              input_names=["lr"], output_names=["sr"], verbose=False)
        else:
            axes = {0: "batch", hw[0]: "height", hw[1]: "width"}
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["lr"], output_names=["sr"],
                              dynamic_axes={"lr": axes, "sr": axes})
    if metadata:
        m = onnx.load(str(path))
        for k, v in metadata.items():
            m.metadata_props.add(key=k, value=v)
        onnx.save(m, str(path))
    return path
