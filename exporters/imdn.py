"""IMDN: Information Multi-Distillation Network (Hui et al., ACM MM 2019), x4.

Written from the paper and the key layout of the official checkpoint (Zheng222/IMDN
`checkpoints/IMDN_x4.pth`, saved from DataParallel, hence the `module.` prefix).
RGB in [0, 1] -> RGB in [0, 1], no mean shift.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register, strip_prefix

# IMDN uses LeakyReLU with slope 0.05 everywhere (not the usual 0.2).
_SLOPE = 0.05


def _conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)


class CCALayer(nn.Module):
    """Contrast-aware channel attention: (per-channel std + mean) -> squeeze/excite gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        # population standard deviation over the spatial positions ("contrast")
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDModule(nn.Module):
    """Progressive refinement: each 3x3 conv keeps a quarter of its channels, refines the rest."""

    def __init__(self, channels: int = 64, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.remaining, channels, 3)
        self.c3 = _conv(self.remaining, channels, 3)
        self.c4 = _conv(self.remaining, self.distilled, 3)
        self.c5 = _conv(self.distilled * 4, channels, 1)
        self.cca = CCALayer(self.distilled * 4)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kept, rest = torch.split(x, (self.distilled, self.remaining), dim=1)
        return kept, rest

    def forward(self, x: Tensor) -> Tensor:
        d1, r1 = self._split(F.leaky_relu(self.c1(x), _SLOPE))
        d2, r2 = self._split(F.leaky_relu(self.c2(r1), _SLOPE))
        d3, r3 = self._split(F.leaky_relu(self.c3(r2), _SLOPE))
        d4 = self.c4(r3)  # the last distillation step has no activation
        out = torch.cat([d1, d2, d3, d4], dim=1)
        return self.c5(self.cca(out)) + x


class IMDN(nn.Module):
    def __init__(
        self, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3, upscale: int = 4
    ) -> None:
        super().__init__()
        self.num_modules = num_modules
        self.fea_conv = _conv(in_nc, nf, 3)
        # blocks are attributes IMDB1..IMDBn (not a ModuleList) to match the checkpoint keys
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", IMDModule(nf))
        self.c = nn.Sequential(_conv(nf * num_modules, nf, 1), nn.LeakyReLU(_SLOPE, inplace=True))
        self.LR_conv = _conv(nf, nf, 3)
        self.upsampler = nn.Sequential(
            _conv(nf, out_nc * upscale**2, 3), nn.PixelShuffle(upscale)
        )

    def forward(self, x: Tensor) -> Tensor:
        fea = self.fea_conv(x)
        outs: list[Tensor] = []
        out = fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        trunk = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return self.upsampler(trunk)


SPEC = register(
    ArchSpec(
        name="imdn",
        build=lambda scale: IMDN(upscale=scale),
        scales=(4,),
        paper="Hui et al., Lightweight Image Super-Resolution with Information "
        "Multi-distillation Network, ACM MM 2019",
        fix_state_dict=strip_prefix("module."),
        notes="official checkpoint saved from DataParallel: keys carry a 'module.' prefix",
        extra={
            "licence": "no licence stated by the origin repo (Zheng222/IMDN); research use",
            "weights": "imdn/IMDN_x4.pth",
            "source": "https://github.com/Zheng222/IMDN/blob/"
            "8f158e6a5ac9db6e5857d9159fd4a6c4214da574/checkpoints/IMDN_x4.pth",
            "sha256": "e660c38221147217a136debeb99eb304d62d9c0f73ac421ed66281b619719714",
        },
    )
)
