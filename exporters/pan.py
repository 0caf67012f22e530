"""PAN: Pixel Attention Network (Zhao et al., ECCV 2020 workshops), x4.

Written from the paper and the key layout of the official checkpoint (zhaohengyuan1/PAN
`experiments/pretrained_models/PANx4_DF2K.pth`; options nf=40, unf=24, nb=16).
RGB in [0, 1] -> RGB in [0, 1]; the network predicts a residual over a bilinear upscale.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register

_SLOPE = 0.2


class PA(nn.Module):
    """Pixel attention: a 1x1 conv + sigmoid gives one weight per pixel and channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """3x3 conv modulated by pixel attention, then another 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: a plain 3x3 branch and a PAConv branch."""

    def __init__(self, nf: int = 40, reduction: int = 2) -> None:
        super().__init__()
        gw = nf // reduction
        self.conv1_a = nn.Conv2d(nf, gw, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, gw, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(gw, gw, 3, padding=1, bias=False))
        self.PAConv = PAConv(gw)
        self.conv3 = nn.Conv2d(gw * reduction, nf, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = F.leaky_relu(self.conv1_a(x), _SLOPE)
        b = F.leaky_relu(self.conv1_b(x), _SLOPE)
        a = F.leaky_relu(self.k1(a), _SLOPE)
        b = F.leaky_relu(self.PAConv(b), _SLOPE)
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    def __init__(
        self,
        in_nc: int = 3,
        out_nc: int = 3,
        nf: int = 40,
        unf: int = 24,
        nb: int = 16,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale != 4:
            # x2/x3 PAN use one upsampling stage without upconv2/att2/HRconv2: other key layout
            raise ValueError("this PAN implementation covers the x4 layout only")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_nc, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*[SCPA(nf) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = PA(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.att2 = PA(unf)
        self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, out_nc, 3, padding=1)

    def _up(self, x: Tensor, upconv: nn.Module, att: nn.Module, hrconv: nn.Module) -> Tensor:
        x = upconv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.leaky_relu(att(x), _SLOPE)
        return F.leaky_relu(hrconv(x), _SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        fea = self._up(fea, self.upconv1, self.att1, self.HRconv1)
        fea = self._up(fea, self.upconv2, self.att2, self.HRconv2)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + base


SPEC = register(
    ArchSpec(
        name="pan",
        build=lambda scale: PAN(scale=scale),
        scales=(4,),
        paper="Zhao et al., Efficient Image Super-Resolution Using Pixel Attention, "
        "ECCV 2020 Workshops",
        extra={
            "licence": "no licence stated by the origin repo (zhaohengyuan1/PAN); research use",
            "weights": "pan/PANx4_DF2K.pth",
            "source": "https://github.com/zhaohengyuan1/PAN/blob/"
            "4d045d18592c5771cd3990da88f292812774e538/"
            "experiments/pretrained_models/PANx4_DF2K.pth",
            "sha256": "739fab99ee7b7058dab4d1b84aa2869bb9fc3995a1c08789c20355bee943833c",
        },
    )
)
