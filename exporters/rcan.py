"""RCAN (Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks", ECCV 2018), with the key layout of the official yulunzhang/RCAN checkpoints.

Structure: mean shift -> `head.0` conv3x3 3->64 -> `body.0..9` residual groups -> `body.10`
conv3x3, plus the head's output -> `tail.0` pixel-shuffle upsampler (as EDSR's: `tail.0.0`,
`tail.0.2` for x4) -> `tail.1` conv3x3 64->3 -> mean shift back.
Residual group `body.g`: `body.g.body.0..19` RCABs -> `body.g.body.20` conv3x3, plus the group
input. RCAB `...body.b`: `body.0` conv3x3, ReLU, `body.2` conv3x3, `body.3` channel attention
(global average pool -> `conv_du.0` 1x1 64->4, ReLU, `conv_du.2` 1x1 4->64, sigmoid, times the
features), plus the block input (no residual scaling).

x4: 15,592,355 weights and 815 convs (1 + 10 x (20 x 4 + 1) + 1 + 2 + 1; the channel-attention
1x1 convs count). RGB in 0..255 (rgb_range 255), DIV2K mean shift.
"""

from __future__ import annotations

from torch import Tensor, nn

from sreval.exporters.common import ArchSpec, MeanShift, register
from sreval.exporters.edsr import DIV2K_MEAN, PixelShuffleUpsampler, conv3x3


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style gate (`conv_du.0`, `conv_du.2`)."""

    def __init__(self, feats: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
        self.conv_du = nn.Sequential(
            nn.Conv2d(feats, feats // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feats // reduction, feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    def __init__(self, feats: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(feats, feats),
            nn.ReLU(inplace=True),
            conv3x3(feats, feats),
            ChannelAttention(feats, reduction),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, feats: int, reduction: int, num_blocks: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(feats, reduction) for _ in range(num_blocks)]
        self.body = nn.Sequential(*blocks, conv3x3(feats, feats))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    def __init__(
        self,
        scale: int = 4,
        num_groups: int = 10,
        num_blocks: int = 20,
        num_feats: int = 64,
        reduction: int = 16,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(DIV2K_MEAN, rgb_range, sign=-1)
        self.head = nn.Sequential(conv3x3(3, num_feats))
        groups: list[nn.Module] = [
            ResidualGroup(num_feats, reduction, num_blocks) for _ in range(num_groups)
        ]
        self.body = nn.Sequential(*groups, conv3x3(num_feats, num_feats))
        self.tail = nn.Sequential(PixelShuffleUpsampler(scale, num_feats), conv3x3(num_feats, 3))
        self.add_mean = MeanShift(DIV2K_MEAN, rgb_range, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


def build_rcan(scale: int) -> RCAN:
    return RCAN(scale)


RCAN_SPEC = register(
    ArchSpec(
        name="rcan",
        build=build_rcan,
        scales=(2, 3, 4, 8),
        value_range=255.0,
        paper=(
            "Zhang et al., Image Super-Resolution Using Very Deep Residual Channel Attention "
            "Networks, ECCV 2018"
        ),
        notes=(
            "official weights: yulunzhang/RCAN (RCAN_BIX4.pt etc., Google Drive / Dropbox); "
            "licence of the weights not known"
        ),
    )
)
