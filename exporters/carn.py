"""CARN and CARN-M (Ahn et al., "Fast, Accurate, and Lightweight Super-Resolution with Cascading
Residual Network", ECCV 2018), with the key layout of the official multi-scale checkpoints of
nmhkahn/CARN-pytorch (`carn.pth`, `carn_m.pth`: one model for x2, x3 and x4).

Structure: mean shift (`sub_mean.shifter`) -> `entry` conv3x3 3->64 -> three cascading blocks
`b1..b3`, each followed by a 1x1 fusion `c1..c3` (BasicBlock `cK.body.0` + ReLU) over the
concatenation of the entry features and every earlier block output (128, 192, 256 -> 64) ->
`upsample.up{2,3,4}` (x4: `body.0` conv3x3 64->256, ReLU, shuffle 2, `body.3` conv, ReLU,
shuffle 2; x2 / x3: `body.0` only) -> `exit` conv3x3 64->3 -> mean shift back (`add_mean`).
A cascading block has the same cascade inside: three residual units `b1..b3`, each followed by a
1x1 fusion `c1..c3`.

- CARN: the units are ResidualBlocks (`bK.body.0` conv3x3, ReLU, `bK.body.2` conv3x3,
  relu(out + x)), plain convs in the upsampler. x4 path: 1,111,875 weights, 34 convs.
- CARN-M: ONE EResidualBlock `b1` (`body.0` 3x3 groups 4, ReLU, `body.2` 3x3 groups 4, ReLU,
  `body.4` 1x1, relu(out + x)) applied three times (shared weights), grouped (4) upsampler
  convs. x4 path: 294,147 weights, 43 convs (the shared unit counts at each use).

The module keeps every branch so the official checkpoint loads strictly, but runs only the
branch of the scale it was built for. RGB in [0, 1] (PIL -> ToTensor in the official code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, MeanShift, register

CARN_MEAN = (0.4488, 0.4371, 0.4040)
CARN_SCALES = (2, 3, 4)
_REPO = "https://raw.githubusercontent.com/nmhkahn/CARN-pytorch/"
_PINNED = "40d3514f81cccd680d846cd5ab07af35f2c8e0e2"  # the commit the shared asset came from
_LICENCE = "MIT (nmhkahn/CARN-pytorch)"


class ResidualBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class EResidualBlock(nn.Module):
    """CARN-M's efficient residual unit: two grouped 3x3 convs and a pointwise conv."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class Fusion(nn.Module):
    """1x1 conv + ReLU (the official `BasicBlock`; key `body.0`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def cascade(x: Tensor, units: list[nn.Module], fusions: list[nn.Module]) -> Tensor:
    """The cascading connection used at both levels: each fusion sees all earlier features."""
    concat = x
    out = x
    for unit, fuse in zip(units, fusions):
        concat = torch.cat([concat, unit(out)], dim=1)
        out = fuse(concat)
    return out


class CascadingBlock(nn.Module):
    def __init__(self, ch: int, mobile: bool, groups: int) -> None:
        super().__init__()
        if mobile:
            self.b1: nn.Module = EResidualBlock(ch, groups)  # shared by all three steps
        else:
            self.b1 = ResidualBlock(ch)
            self.b2 = ResidualBlock(ch)
            self.b3 = ResidualBlock(ch)
        self.mobile = mobile
        self.c1 = Fusion(2 * ch, ch)
        self.c2 = Fusion(3 * ch, ch)
        self.c3 = Fusion(4 * ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        units = [self.b1] * 3 if self.mobile else [self.b1, self.b2, self.b3]
        return cascade(x, units, [self.c1, self.c2, self.c3])


class UpsampleBranch(nn.Module):
    """x2/x4: (conv ch->4ch, ReLU, shuffle 2) per factor 2; x3: conv ch->9ch, ReLU, shuffle 3."""

    def __init__(self, ch: int, scale: int, groups: int) -> None:
        super().__init__()
        steps = [(2, 4)] * (scale // 2) if scale in (2, 4) else [(3, 9)]
        layers: list[nn.Module] = []
        for factor, mult in steps:
            layers += [
                nn.Conv2d(ch, mult * ch, 3, padding=1, groups=groups),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(factor),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class MultiScaleUpsample(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.up2 = UpsampleBranch(ch, 2, groups)
        self.up3 = UpsampleBranch(ch, 3, groups)
        self.up4 = UpsampleBranch(ch, 4, groups)

    def branch(self, scale: int) -> nn.Module:
        return {2: self.up2, 3: self.up3, 4: self.up4}[scale]


class ShifterMeanShift(nn.Module):
    """CARN keeps its mean shift one level down (`sub_mean.shifter.{weight,bias}`)."""

    def __init__(self, mean: tuple[float, float, float], sign: int) -> None:
        super().__init__()
        self.shifter = MeanShift(mean, 1.0, sign)

    def forward(self, x: Tensor) -> Tensor:
        return self.shifter(x)


class CARN(nn.Module):
    def __init__(self, scale: int = 4, mobile: bool = False, ch: int = 64, groups: int = 4) -> None:
        super().__init__()
        if scale not in CARN_SCALES:
            raise ValueError(f"CARN has x2, x3 and x4 branches, not x{scale}")
        self.scale = scale
        groups = groups if mobile else 1
        self.sub_mean = ShifterMeanShift(CARN_MEAN, sign=-1)
        self.add_mean = ShifterMeanShift(CARN_MEAN, sign=1)
        self.entry = nn.Conv2d(3, ch, 3, padding=1)
        self.b1 = CascadingBlock(ch, mobile, groups)
        self.b2 = CascadingBlock(ch, mobile, groups)
        self.b3 = CascadingBlock(ch, mobile, groups)
        self.c1 = Fusion(2 * ch, ch)
        self.c2 = Fusion(3 * ch, ch)
        self.c3 = Fusion(4 * ch, ch)
        self.upsample = MultiScaleUpsample(ch, groups)
        self.exit = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.entry(self.sub_mean(x))
        x = cascade(x, [self.b1, self.b2, self.b3], [self.c1, self.c2, self.c3])
        x = self.upsample.branch(self.scale)(x)
        return self.add_mean(self.exit(x))


def build_carn(scale: int) -> CARN:
    return CARN(scale, mobile=False)


def build_carn_m(scale: int) -> CARN:
    return CARN(scale, mobile=True)


_PAPER = (
    "Ahn et al., Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual "
    "Network, ECCV 2018"
)

CARN_SPEC = register(
    ArchSpec(
        name="carn",
        build=build_carn,
        scales=CARN_SCALES,
        paper=_PAPER,
        notes="official weights: nmhkahn/CARN-pytorch checkpoint/carn.pth (multi-scale, MIT)",
        extra={"url": _REPO + "master/checkpoint/carn.pth", "licence": _LICENCE},
    )
)

CARN_M_SPEC = register(
    ArchSpec(
        name="carn_m",
        build=build_carn_m,
        scales=CARN_SCALES,
        paper=_PAPER + " (CARN-M)",
        notes="official weights: nmhkahn/CARN-pytorch checkpoint/carn_m.pth (multi-scale, MIT)",
        extra={
            "url": _REPO + _PINNED + "/checkpoint/carn_m.pth",
            "sha256": "d48a759a84509351facb6b7c6d5bd6edec98b98519b8c464ee4ab44d2ba964ff",
            "licence": _LICENCE,
        },
    )
)
