"""EDSR and EDSR-baseline (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017), with the key layout of the official sanghyun-son/EDSR-PyTorch
checkpoints.

Structure: mean shift -> `head.0` conv3x3 3->F -> `body.0..N-1` residual blocks
(`body.i.body.0` conv3x3, ReLU, `body.i.body.2` conv3x3, output scaled by `res_scale`, plus the
input) -> `body.N` conv3x3, plus the head's output (global skip) -> `tail.0` pixel-shuffle
upsampler (x4: `tail.0.0` conv F->4F, shuffle 2, `tail.0.2` conv F->4F, shuffle 2; x2/x3: one
`tail.0.0` conv F->s^2 F) -> `tail.1` conv3x3 F->3 -> mean shift back.

EDSR x4: 32 blocks, F=256, res_scale 0.1 (43,089,923 weights, 69 convs on the x4 path);
EDSR-baseline: 16 blocks, F=64, res_scale 1 (1,517,571 weights, 37 convs). The official models
read and write RGB in 0..255 (rgb_range 255) and shift by the DIV2K mean, so the specs say
value_range 255 and the export adapter scales [0, 1] around them.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from sreval.exporters.common import ArchSpec, MeanShift, register

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
EDSR_URL = "https://cv.snu.ac.kr/research/EDSR/models/"


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled residual (`body.0`, `body.2`)."""

    def __init__(self, feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(feats, feats), nn.ReLU(inplace=True), conv3x3(feats, feats)
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.body(x)
        if self.res_scale != 1.0:
            res = res * self.res_scale
        return x + res


class PixelShuffleUpsampler(nn.Sequential):
    """EDSR/RCAN upsampler: (conv F->4F, shuffle 2) x log2(s) for powers of two, or one x3 step."""

    def __init__(self, scale: int, feats: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(feats, 4 * feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(feats, 9 * feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"unsupported scale {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    def __init__(
        self,
        scale: int = 4,
        num_blocks: int = 32,
        num_feats: int = 256,
        res_scale: float = 0.1,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(DIV2K_MEAN, rgb_range, sign=-1)
        self.head = nn.Sequential(conv3x3(3, num_feats))
        blocks: list[nn.Module] = [ResBlock(num_feats, res_scale) for _ in range(num_blocks)]
        self.body = nn.Sequential(*blocks, conv3x3(num_feats, num_feats))
        self.tail = nn.Sequential(PixelShuffleUpsampler(scale, num_feats), conv3x3(num_feats, 3))
        self.add_mean = MeanShift(DIV2K_MEAN, rgb_range, sign=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))


def build_edsr(scale: int) -> EDSR:
    return EDSR(scale, num_blocks=32, num_feats=256, res_scale=0.1)


def build_edsr_baseline(scale: int) -> EDSR:
    return EDSR(scale, num_blocks=16, num_feats=64, res_scale=1.0)


_PAPER = "Lim et al., Enhanced Deep Residual Networks for Single Image Super-Resolution, CVPRW 2017"
_NOTES = (
    "official weights: sanghyun-son/EDSR-PyTorch (MIT licence); one checkpoint per scale; "
    "the file name's 8-hex suffix is the download's hash prefix (not verified here)"
)

EDSR_SPEC = register(
    ArchSpec(
        name="edsr",
        build=build_edsr,
        scales=(2, 3, 4),
        value_range=255.0,
        paper=_PAPER,
        notes=_NOTES,
        extra={
            "url": EDSR_URL + "edsr_x4-4f62e9ef.pt",
            "url_x2": EDSR_URL + "edsr_x2-0edfb8a3.pt",
            "url_x3": EDSR_URL + "edsr_x3-ea3ef2c6.pt",
            "licence": "MIT (sanghyun-son/EDSR-PyTorch)",
        },
    )
)

EDSR_BASELINE_SPEC = register(
    ArchSpec(
        name="edsr_baseline",
        build=build_edsr_baseline,
        scales=(2, 3, 4),
        value_range=255.0,
        paper=_PAPER + " (EDSR-baseline)",
        notes=_NOTES,
        extra={
            "url": EDSR_URL + "edsr_baseline_x4-6b446fab.pt",
            "url_x2": EDSR_URL + "edsr_baseline_x2-1bc95232.pt",
            "url_x3": EDSR_URL + "edsr_baseline_x3-abf2a44e.pt",
            "licence": "MIT (sanghyun-son/EDSR-PyTorch)",
        },
    )
)
