"""FSRCNN (Dong et al., ECCV 2016), PyTorch port layout of yjn870/FSRCNN-pytorch, x4.

Feature extraction (5x5, d=56) -> shrinking (1x1, s=12) -> m=4 mapping 3x3 convs ->
expanding (1x1) -> a 9x9 transposed conv with stride `scale`; PReLU after every conv but the
last. Single channel: Y in [0, 1] -> Y in [0, 1]. The origin repo computes Y as
16 + (64.738 R + 129.057 G + 25.064 B) / 256 (R, G, B in 0..255), a close variant of MATLAB's
studio-range Y.
"""

from __future__ import annotations

from torch import Tensor, nn

from sreval.exporters.common import ArchSpec, register


def _conv_prelu(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.PReLU(out_ch)]


class FSRCNN(nn.Module):
    def __init__(
        self, scale_factor: int = 4, num_channels: int = 1, d: int = 56, s: int = 12, m: int = 4
    ) -> None:
        super().__init__()
        self.first_part = nn.Sequential(*_conv_prelu(num_channels, d, 5))
        mid = _conv_prelu(d, s, 1)
        for _ in range(m):
            mid += _conv_prelu(s, s, 3)
        mid += _conv_prelu(s, d, 1)
        self.mid_part = nn.Sequential(*mid)
        # padding 4 + output_padding scale-1 makes the output exactly scale x the input
        self.last_part = nn.ConvTranspose2d(
            d, num_channels, 9, stride=scale_factor, padding=4, output_padding=scale_factor - 1
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


SPEC = register(
    ArchSpec(
        name="fsrcnn",
        build=lambda scale: FSRCNN(scale_factor=scale),
        scales=(4,),
        channels="y",
        paper="Dong, Loy and Tang, Accelerating the Super-Resolution Convolutional Neural "
        "Network, ECCV 2016",
        notes="Y only; weights: third-party upload of yjn870/FSRCNN-pytorch's fsrcnn_x4.pth "
        "(pull request #6), verified by PSNR",
        extra={
            "licence": "no licence file in yjn870/FSRCNN-pytorch; research use",
            "weights": "fsrcnn/fsrcnn_x4.pth",
            "sha256": "c15150d6787d487f38a68e66be5ec8a964182403af494e6a935fa03eeb56a630",
        },
    )
)
