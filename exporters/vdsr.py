"""VDSR (Kim, Lee and Lee, CVPR 2016), layout of twtygqyy/pytorch-vdsr.

20 3x3 convs (no biases) with ReLU and a global residual. It works on the Y channel of the
bicubic-UPSAMPLED image (HR size), so one model serves every scale. Y in [0, 1] -> Y in [0, 1].

The official `model_epoch_50.pth` is a legacy whole-model pickle that `read_checkpoint`
refuses; `vdsr_state_dict.pth` holds the same tensors as a plain state dict.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from sreval.exporters.common import ArchSpec, register


class ConvReLU(nn.Module):
    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class VDSR(nn.Module):
    def __init__(self, num_channels: int = 1, nf: int = 64, num_blocks: int = 18) -> None:
        super().__init__()
        self.input = nn.Conv2d(num_channels, nf, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*[ConvReLU(nf) for _ in range(num_blocks)])
        self.output = nn.Conv2d(nf, num_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.residual_layer(F.relu(self.input(x)))) + x


SPEC = register(
    ArchSpec(
        name="vdsr",
        # the scale only matters to the adapter (how far to pre-upsample); the net is the same
        build=lambda scale: VDSR(),
        scales=(2, 3, 4),
        channels="y",
        preupsampled=True,
        paper="Kim, Lee and Lee, Accurate Image Super-Resolution Using Very Deep "
        "Convolutional Networks, CVPR 2016",
        notes="input = Y of the bicubic-upsampled LR image; official file is a legacy pickle, "
        "use the derived vdsr_state_dict.pth",
        extra={
            "licence": "MIT (twtygqyy/pytorch-vdsr)",
            "weights": "vdsr/vdsr_state_dict.pth",
            "source": "https://github.com/twtygqyy/pytorch-vdsr/blob/"
            "514b021044018baf909e79f48392783daa592888/model/model_epoch_50.pth",
            "source_sha256": "eab4d79ae5a6e5acef4c55e46015aed225ade207679bcb6695b07af8fb18e876",
        },
    )
)
