"""LapSRN (Lai et al., CVPR 2017), x4 layout of twtygqyy/pytorch-LapSRN.

A two-level Laplacian pyramid: each level upsamples features (10 convs + a stride-2 transposed
conv) and the image (a stride-2 transposed conv), and adds a predicted residual. Returns
`(hr_2x, hr_4x)`. Y in [0, 1] -> Y in [0, 1] (LR size in).

The official `model_epoch_100.pth` is a legacy whole-model pickle that `read_checkpoint`
refuses; `lapsrn_x4_state_dict.pth` holds the same tensors as a plain state dict.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register

_SLOPE = 0.2


def _up2(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    # 4x4 kernel, stride 2, padding 1: exactly doubles height and width
    return nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)


class FeatureLevel(nn.Module):
    """10 x (conv3x3 + LReLU), then a x2 transposed conv + LReLU (keys `cov_block.N`)."""

    def __init__(self, nf: int = 64, depth: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(nf, nf, 3, padding=1, bias=False), nn.LeakyReLU(_SLOPE, True)]
        layers += [_up2(nf, nf), nn.LeakyReLU(_SLOPE, True)]
        self.cov_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.cov_block(x)


class LapSRN(nn.Module):
    def __init__(self, num_channels: int = 1, nf: int = 64) -> None:
        super().__init__()
        self.conv_input = nn.Conv2d(num_channels, nf, 3, padding=1, bias=False)
        # the origin wraps each feature level in a one-element Sequential: keys convt_F1.0.*
        self.convt_F1 = nn.Sequential(FeatureLevel(nf))
        self.convt_I1 = _up2(num_channels, num_channels)
        self.convt_R1 = nn.Conv2d(nf, num_channels, 3, padding=1, bias=False)
        self.convt_F2 = nn.Sequential(FeatureLevel(nf))
        self.convt_I2 = _up2(num_channels, num_channels)
        self.convt_R2 = nn.Conv2d(nf, num_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f1 = self.convt_F1(F.leaky_relu(self.conv_input(x), _SLOPE))
        hr2 = self.convt_I1(x) + self.convt_R1(f1)
        f2 = self.convt_F2(f1)
        hr4 = self.convt_I2(hr2) + self.convt_R2(f2)
        return hr2, hr4


SPEC = register(
    ArchSpec(
        name="lapsrn",
        build=lambda scale: LapSRN(),
        scales=(4,),
        channels="y",
        paper="Lai et al., Deep Laplacian Pyramid Networks for Fast and Accurate "
        "Super-Resolution, CVPR 2017",
        notes="returns (x2, x4); the x4 output is the second; official file is a legacy "
        "pickle, use the derived lapsrn_x4_state_dict.pth",
        extra={
            "licence": "MIT (twtygqyy/pytorch-LapSRN)",
            "weights": "lapsrn/lapsrn_x4_state_dict.pth",
            "source": "https://github.com/twtygqyy/pytorch-LapSRN/blob/"
            "1b7737abe6ccaef2d14b673d301edbace3414c02/model/model_epoch_100.pth",
            "source_sha256": "acdd5bf5a2686bcb9e458d72ea811fb0b087adbd70225eb92aeb4793dfb8c7d0",
        },
    )
)
