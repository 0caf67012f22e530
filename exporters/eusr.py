"""4PP-EUSR generator (Choi et al., "Deep Learning-based Image Super-Resolution Considering
Quantitative and Perceptual Quality", arXiv:1809.04789, 2018): the multi-scale EUSR generator of
Kim & Lee ("Deep Residual Network with Enhanced Upscaling Module for Super-Resolution",
CVPRW 2018), trained with GAN and perceptual-score losses.

Configuration (the official TensorFlow model, idearibosome/tf-perceptual-eusr: 64 features,
32 shared local residual blocks, 1 local residual block per EUM residual module, scales 2/4/8):

- mean shift: subtract the RGB mean (114.4, 111.5, 103.0) on 0..255 input; add it at the end
- `first_conv`: conv3x3 3->64 (shared)
- `initial.x{s}`: two scale-specific local residual blocks with 5x5 convs
  (LRB = conv, ReLU, conv, plus the input; no residual scaling)
- `shared`: residual module = 32 LRBs (3x3) + `shared.conv` 3x3, plus the module input
- `upscaling.x{s}.eum`: log2(s) enhanced upscaling modules (EUM); EUM `stages.i` = four
  residual modules `stages.i.k` (each `blocks.0` LRB + `conv`, plus its input) applied in a
  chain, whose four outputs are concatenated and rearranged by depth-to-space(2) in
  TensorFlow's (DCR) channel order: pixel (dy, dx) of each 2x2 output block comes from the
  chain's (2 dy + dx)-th output (`dcr_interleave`)
- `upscaling.x{s}.last`: conv3x3 64->3

Counts: x4 path = 1 + 4 + (64 + 1) + 2 x 4 x 3 + 1 = 95 convs and
1,792 + 409,856 + 2,400,320 + 886,272 + 1,731 = 3,699,971 weights; the whole generator with its
x2 and x8 branches = 6,295,689 (Table 1's 6.3M). 4PP-EUSR produces x4 outputs only (its x4
output is one pass of the x4 branch), so the spec offers x4; the module can run any branch.

The official weights are a TensorFlow graph, so there is no PyTorch key layout to follow: the
names here are our own, chosen to mirror the TF variable scopes one to one. Input and output RGB
in 0..255 (value_range 255).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register

EUSR_MEAN = (114.4, 111.5, 103.0)
EUSR_SCALES = (2, 4, 8)


class LocalResidualBlock(nn.Module):
    def __init__(self, ch: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(ch, ch, kernel, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualModule(nn.Module):
    """`blocks` LRBs + one conv, plus the module input."""

    def __init__(self, ch: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[LocalResidualBlock(ch, 3) for _ in range(num_blocks)])
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


def dcr_interleave(outs: list[Tensor]) -> Tensor:
    """TF `depth_to_space(concat(outs, channels), 2)`: pixel (dy, dx) of each 2x2 output block
    comes from outs[2 dy + dx].

    Stacking on a new axis after the channels puts outs[k][c] at channel c*4 + k, which is
    exactly the (CRD) order PixelShuffle reads, so the export is one DepthToSpace(CRD).
    """
    n, c, h, w = outs[0].shape
    return F.pixel_shuffle(torch.stack(outs, dim=2).reshape(n, 4 * c, h, w), 2)


class EnhancedUpscaling(nn.Module):
    """log2(scale) EUM stages of four chained residual modules each."""

    def __init__(self, ch: int, scale: int, num_blocks: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.ModuleList(ResidualModule(ch, num_blocks) for _ in range(4))
            for _ in range(int(math.log2(scale)))
        )

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            outs = []
            for module in stage:
                x = module(x)
                outs.append(x)
            x = dcr_interleave(outs)
        return x


class ScaleBranch(nn.Module):
    def __init__(self, ch: int, scale: int, num_blocks: int) -> None:
        super().__init__()
        self.eum = EnhancedUpscaling(ch, scale, num_blocks)
        self.last = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.eum(x))


class EUSR(nn.Module):
    mean: Tensor

    def __init__(
        self,
        scale: int = 4,
        ch: int = 64,
        shared_blocks: int = 32,
        upscale_blocks: int = 1,
        scales: tuple[int, ...] = EUSR_SCALES,
    ) -> None:
        super().__init__()
        if scale not in scales:
            raise ValueError(f"EUSR has branches {scales}, not x{scale}")
        self.scale = scale
        self.register_buffer("mean", torch.tensor(EUSR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.first_conv = nn.Conv2d(3, ch, 3, padding=1)
        self.initial = nn.ModuleDict(
            {
                f"x{s}": nn.Sequential(LocalResidualBlock(ch, 5), LocalResidualBlock(ch, 5))
                for s in scales
            }
        )
        self.shared = ResidualModule(ch, shared_blocks)
        self.upscaling = nn.ModuleDict(
            {f"x{s}": ScaleBranch(ch, s, upscale_blocks) for s in scales}
        )

    def forward(self, x: Tensor) -> Tensor:
        key = f"x{self.scale}"
        x = self.first_conv(x - self.mean)
        x = self.shared(self.initial[key](x))
        return self.upscaling[key](x) + self.mean


def build_4pp_eusr(scale: int) -> EUSR:
    return EUSR(scale)


EUSR_4PP_SPEC = register(
    ArchSpec(
        name="4pp_eusr",
        build=build_4pp_eusr,
        scales=(4,),
        value_range=255.0,
        gan_trained=True,
        paper=(
            "Choi et al., Deep Learning-based Image Super-Resolution Considering Quantitative and "
            "Perceptual Quality, arXiv:1809.04789 (PIRM 2018)"
        ),
        notes=(
            "official weights: idearibosome/tf-perceptual-eusr (TensorFlow frozen graph; needs a "
            "TF-variable -> key conversion, not provided here); licence of the weights not known"
        ),
    )
)
