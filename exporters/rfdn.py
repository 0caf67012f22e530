"""RFDN: Residual Feature Distillation Network (Liu et al., ECCV 2020 workshops, AIM 2020), x4.

Written from the paper and the key layout of the official checkpoint (njulj/RFDN
`trained_model/RFDN_AIM.pth`). The checkpoint works on RGB in [0, 255]: the origin test script
feeds uint8 values as floats without dividing by 255 (fed [0, 1] it gives garbage).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register

_SLOPE = 0.05


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)


class ESA(nn.Module):
    """Enhanced spatial attention: a large receptive field at low resolution, as a sigmoid gate."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.conv1(x)
        # strided conv + 7x7/3 max-pool: needs an input of at least 15x15 pixels
        low = F.max_pool2d(self.conv2(reduced), kernel_size=7, stride=3)
        low = F.relu(self.conv_max(low))
        low = self.conv3_(F.relu(self.conv3(low)))
        up = F.interpolate(low, size=x.shape[2:], mode="bilinear", align_corners=False)
        gate = torch.sigmoid(self.conv4(up + self.conv_f(reduced)))
        return x * gate


class RFDB(nn.Module):
    """Residual feature distillation: 1x1 'distill' convs beside 3x3 shallow-residual convs."""

    def __init__(self, channels: int = 50) -> None:
        super().__init__()
        dc = channels // 2
        self.c1_d = nn.Conv2d(channels, dc, 1)
        self.c1_r = _conv(channels, channels, 3)
        self.c2_d = nn.Conv2d(channels, dc, 1)
        self.c2_r = _conv(channels, channels, 3)
        self.c3_d = nn.Conv2d(channels, dc, 1)
        self.c3_r = _conv(channels, channels, 3)
        self.c4 = _conv(channels, dc, 3)
        self.c5 = nn.Conv2d(dc * 4, channels, 1)
        self.esa = ESA(channels)

    def forward(self, x: Tensor) -> Tensor:
        d1 = F.leaky_relu(self.c1_d(x), _SLOPE)
        r1 = F.leaky_relu(self.c1_r(x) + x, _SLOPE)
        d2 = F.leaky_relu(self.c2_d(r1), _SLOPE)
        r2 = F.leaky_relu(self.c2_r(r1) + r1, _SLOPE)
        d3 = F.leaky_relu(self.c3_d(r2), _SLOPE)
        r3 = F.leaky_relu(self.c3_r(r2) + r2, _SLOPE)
        d4 = F.leaky_relu(self.c4(r3), _SLOPE)
        return self.esa(self.c5(torch.cat([d1, d2, d3, d4], dim=1)))


class RFDN(nn.Module):
    def __init__(
        self, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3, upscale: int = 4
    ) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = _conv(in_nc, nf, 3)
        for i in range(1, num_modules + 1):
            self.add_module(f"B{i}", RFDB(nf))  # checkpoint keys B1..Bn
        self.c = nn.Sequential(
            nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(_SLOPE, inplace=True)
        )
        self.LR_conv = _conv(nf, nf, 3)
        self.upsampler = nn.Sequential(_conv(nf, out_nc * upscale**2, 3), nn.PixelShuffle(upscale))

    def forward(self, x: Tensor) -> Tensor:
        fea = self.fea_conv(x)
        outs: list[Tensor] = []
        out = fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        trunk = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(trunk)


SPEC = register(
    ArchSpec(
        name="rfdn",
        build=lambda scale: RFDN(upscale=scale),
        scales=(4,),
        value_range=255.0,
        paper="Liu et al., Residual Feature Distillation Network for Lightweight Image "
        "Super-Resolution, ECCV 2020 Workshops (AIM 2020 efficient SR challenge)",
        notes="RFDN_AIM.pth reads and writes RGB in [0, 255]; ESA needs inputs >= 15x15",
        extra={
            "licence": "MIT (njulj/RFDN)",
            "min_input": "15",  # smallest LR height/width ESA's stride-2 conv + 7x7/3 pool accept
            "weights": "rfdn/RFDN_AIM.pth",
            "source": "https://github.com/njulj/RFDN/blob/"
            "7cf4e25b6633e81fd7e26891aeee2baca4f8f927/trained_model/RFDN_AIM.pth",
            "sha256": "11af8ec8ebd68689e90ef1e29044f9804c72d3bd9f7573820b7b26035782760c",
        },
    )
)
