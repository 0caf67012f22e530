"""Bicubic upscaling, the paper's non-learned baseline, as ONE ONNX `Resize` node.

The Resize: mode "cubic", cubic_coeff_a = -0.5 (Keys' kernel, which MATLAB's `imresize` uses;
PyTorch's `F.interpolate(mode="bicubic")` uses -0.75), coordinate_transformation_mode
"half_pixel" (MATLAB's x_in = (x_out + 0.5) / s - 0.5), exclude_outside 0, scales
[1, 1, s, s]. No antialiasing is involved: MATLAB only widens the kernel when downscaling.

Borders: onnxruntime clamps out-of-range taps to the edge pixel (replicate), MATLAB mirrors
(symmetric padding: tap -1 -> 0 as well, but tap -2 -> 1 where the clamp gives 0). At x4 only
the outer 2 output rows/columns on each side use a tap -2 (or n+1), so only they differ (up to
~0.06 on noise images); everything else equals MATLAB's imresize (`sreval.io.imresize`) to
~1e-7. The benchmark PSNR shaves 4 pixels, so the headline numbers are unaffected.

The torch module computes the same Resize itself (`cubic_resize`: separable 4-tap gather with
edge clamping, differentiable) and only during ONNX export hands over a symbolic that emits the
Resize node. Stock onnx2torch 1.5.15's Resize converter ignores `cubic_coeff_a` (it warns and
calls `F.interpolate(mode="bicubic")`, i.e. a = -0.75: up to ~0.08 off on [0, 1] images), so
convert with `sreval.convert.to_torch`, whose Resize converter honours the coefficient (exact to
float rounding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sreval.exporters.common import ArchSpec, register

MATLAB_CUBIC_A = -0.5


def cubic_weights(t: Tensor, a: float) -> Tensor:
    """Keys' cubic kernel at the four taps -1, 0, 1, 2 around a point with fraction t (..., 4)."""
    d = torch.stack([t + 1, t, 1 - t, 2 - t], dim=-1).abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _resize_axis(x: Tensor, dim: int, out_size: int, scale: float, a: float) -> Tensor:
    """Resize one axis the way ONNX Resize(cubic, half_pixel, exclude_outside=0) does."""
    in_size = x.shape[dim]
    dst = torch.arange(out_size, dtype=torch.float64, device=x.device)
    src = (dst + 0.5) / scale - 0.5
    base = torch.floor(src)
    w = cubic_weights(src - base, a).to(x.dtype)  # (out, 4)
    taps = base.long().unsqueeze(1) + torch.arange(-1, 3, device=x.device)  # (out, 4)
    taps = taps.clamp(0, in_size - 1)  # edge replicate, as onnxruntime
    gathered = x.index_select(dim, taps.reshape(-1))
    shape = list(x.shape)
    shape[dim : dim + 1] = [out_size, 4]
    gathered = gathered.reshape(shape)
    wshape = [1] * len(shape)
    wshape[dim], wshape[dim + 1] = out_size, 4
    return (gathered * w.reshape(wshape)).sum(dim + 1)


def cubic_resize(x: Tensor, scale: float, a: float = MATLAB_CUBIC_A) -> Tensor:
    """NCHW bicubic resize by `scale` (output size floor(in * scale)), ONNX Resize semantics."""
    h, w = x.shape[-2:]
    x = _resize_axis(x, x.dim() - 2, int(h * scale), scale, a)
    return _resize_axis(x, x.dim() - 1, int(w * scale), scale, a)


class _ResizeForExport(torch.autograd.Function):
    """Only used while exporting: its symbolic is the one Resize node."""

    @staticmethod
    def forward(ctx: object, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        return cubic_resize(x, scale)

    @staticmethod
    def symbolic(g: object, x: object, scale: float) -> object:
        empty = torch.tensor([], dtype=torch.float32)
        scales = torch.tensor([1.0, 1.0, float(scale), float(scale)], dtype=torch.float32)
        return g.op(  # type: ignore[attr-defined]
            "Resize",
            x,
            g.op("Constant", value_t=empty),  # type: ignore[attr-defined]
            g.op("Constant", value_t=scales),  # type: ignore[attr-defined]
            mode_s="cubic",
            cubic_coeff_a_f=MATLAB_CUBIC_A,
            coordinate_transformation_mode_s="half_pixel",
            exclude_outside_i=0,
        )


class Bicubic(nn.Module):
    """Bicubic x`scale` upscaling with MATLAB's kernel (a = -0.5); no parameters."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            return _ResizeForExport.apply(x, float(self.scale))
        return cubic_resize(x, float(self.scale))


def build_bicubic(scale: int) -> Bicubic:
    return Bicubic(scale)


BICUBIC_SPEC = register(
    ArchSpec(
        name="bicubic",
        build=build_bicubic,
        scales=(2, 3, 4, 8),
        paper="bicubic interpolation (Keys 1981; MATLAB imresize kernel, a = -0.5)",
        notes="one ONNX Resize (cubic, a=-0.5, half_pixel, edge clamp); no weights",
    )
)
