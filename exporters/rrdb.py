"""RRDBNet, the generator of ESRGAN (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCVW 2018): the GAN-trained `esrgan` and the PSNR-trained `rrdb` share it.

Our own key layout is BasicSR's / Real-ESRGAN's: `conv_first` -> `body.0..22` RRDBs ->
`conv_body`, plus `conv_first`'s output -> nearest x2 -> `conv_up1`, LReLU -> nearest x2 ->
`conv_up2`, LReLU -> `conv_hr`, LReLU -> `conv_last`. An RRDB `body.i` chains three residual
dense blocks `rdb1..3` and returns `0.2 * out + x`; a dense block has five 3x3 convs
`conv1..5` (conv k reads the concatenation of the input and all previous outputs: 64 + 32(k-1)
channels; conv1..4 give 32 channels with LReLU(0.2), conv5 gives 64) and returns
`0.2 * conv5 + x`. LReLU slope 0.2 throughout.

The official ESRGAN checkpoints (xinntao/ESRGAN `RRDB_ESRGAN_x4.pth`, `RRDB_PSNR_x4.pth`) use
the other layout (`RRDB_trunk.i.RDBk.convj`, `trunk_conv`, `upconv1/2`, `HRconv`); `fix_state_dict`
renames them (detected by `RRDB_trunk.` keys). x4: 16,697,987 weights, 351 convs
(1 + 23 x 3 x 5 + 1 + 4). RGB in [0, 1].

As in BasicSR, x2 / x1 variants first fold 2x2 / 4x4 pixel blocks into channels
(pixel-unshuffle), so `conv_first` reads 4x / 16x the input channels.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, StateDict, register

# official ESRGAN layout (xinntao/ESRGAN RRDBNet_arch.py, 2019-) -> ours
_ESRGAN_RENAMES = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv1\."), "conv_up1."),
    (re.compile(r"^upconv2\."), "conv_up2."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)
# the first ESRGAN release's sequential layout (mapping documented by the repo's
# transer_RRDB_models.py): model.0 / model.1.sub.i.RDBk.convj.0 / model.1.sub.23 / model.3,6,8,10
_ESRGAN_V0_RENAMES = (
    (re.compile(r"^model\.0\."), "conv_first."),
    (re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\."), r"body.\1.rdb\2.conv\3."),
    (re.compile(r"^model\.1\.sub\.23\."), "conv_body."),
    (re.compile(r"^model\.3\."), "conv_up1."),
    (re.compile(r"^model\.6\."), "conv_up2."),
    (re.compile(r"^model\.8\."), "conv_hr."),
    (re.compile(r"^model\.10\."), "conv_last."),
)


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, padding=1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, padding=1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, padding=1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, padding=1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports x1, x2 and x4, not x{scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]  # x2/x1 models run at a reduced size
        cin = num_in_ch * self.unshuffle**2
        self.conv_first = nn.Conv2d(cin, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def fix_state_dict(sd: StateDict) -> StateDict:
    """ESRGAN layouts (detected by their keys) -> ours; a BasicSR / Real-ESRGAN dict is unchanged.

    A DataParallel `module.` prefix is dropped first.
    """
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if any(k.startswith("RRDB_trunk.") for k in sd):
        renames = _ESRGAN_RENAMES
    elif any(k.startswith("model.1.sub.") for k in sd):
        renames = _ESRGAN_V0_RENAMES
    else:
        return sd
    out: StateDict = {}
    for key, value in sd.items():
        for pattern, repl in renames:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def build_rrdbnet(scale: int) -> RRDBNet:
    return RRDBNet(scale=scale)


_PAPER = (
    "Wang et al., ESRGAN: Enhanced Super-Resolution Generative Adversarial Networks, ECCVW 2018"
)
_NOTES = (
    "official weights: xinntao/ESRGAN (RRDB_ESRGAN_x4.pth / RRDB_PSNR_x4.pth, Google Drive); "
    "also loads BasicSR / Real-ESRGAN RRDBNet checkpoints"
)
_LICENCE = "Apache-2.0 (xinntao/ESRGAN LICENSE)"

ESRGAN_SPEC = register(
    ArchSpec(
        name="esrgan",
        build=build_rrdbnet,
        scales=(4,),
        gan_trained=True,
        paper=_PAPER,
        fix_state_dict=fix_state_dict,
        notes=_NOTES + "; the GAN-trained generator (RRDB_ESRGAN_x4.pth)",
        extra={"licence": _LICENCE},
    )
)

RRDB_SPEC = register(
    ArchSpec(
        name="rrdb",
        build=build_rrdbnet,
        scales=(4,),
        gan_trained=False,
        paper=_PAPER + " (RRDB, PSNR-oriented)",
        fix_state_dict=fix_state_dict,
        notes=_NOTES + "; the PSNR-trained generator (RRDB_PSNR_x4.pth)",
        extra={"licence": _LICENCE},
    )
)
