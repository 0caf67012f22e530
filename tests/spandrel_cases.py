"""Small random-initialised models of spandrel's architectures (its own classes, tiny
hyper-parameters), and the architectures sreval cannot attack, with the reason. The checkpoint
tests are parametrized over spandrel's registry: every architecture is in exactly one table."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def _make(arch: str, cls: str, **kw: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(importlib.import_module(f"spandrel.architectures.{arch}"), cls)(**kw)

    return build


# architecture id -> a small model of it
BUILD: dict[str, Callable[[], nn.Module]] = {
    "Compact": _make("Compact", "Compact", num_feat=16, num_conv=4, upscale=4),
    "SwiftSRGAN": _make("SwiftSRGAN", "SwiftSRGAN", num_channels=16, num_blocks=2, upscale_factor=2),
    "ESRGAN": _make("ESRGAN", "ESRGAN", num_filters=16, num_blocks=2, scale=4),
    "SPAN": _make("SPAN", "SPAN", num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4),
    "SAFMN": _make("SAFMN", "SAFMN", dim=16, n_blocks=2, upscaling_factor=4),
    "PLKSR": _make("PLKSR", "PLKSR", dim=16, n_blocks=2, upscaling_factor=4, kernel_size=7),
    "RCAN": _make("RCAN", "RCAN", scale=2, n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4),
    "DCTLSA": _make("DCTLSA", "DCTLSA", nf=20, upscale=2, num_head=5),
    "OmniSR": _make("OmniSR", "OmniSR", num_feat=16, block_num=1, window_size=8, up_scale=2),
    "DITN": _make("DITN", "DITN", dim=16, ITL_blocks=1, SAL_blocks=1, patch_size=8, upscale=2),
    "SwinIR": _make("SwinIR", "SwinIR", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                    upsampler="pixelshuffledirect"),
    "Swin2SR": _make("Swin2SR", "Swin2SR", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                     upsampler="pixelshuffledirect"),
    "HAT": _make("HAT", "HAT", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                 upsampler="pixelshuffle", compress_ratio=3, squeeze_factor=4),
    # RGT and CRAFT below embed_dim 16 have a 0-wide LayerNorm in their position bias, which
    # onnxruntime refuses (torch computes it): not a size people train
    "RGT": _make("RGT", "RGT", embed_dim=32, depth=[2], num_heads=[2], upscale=2, split_size=[4, 4]),
    "DAT": _make("DAT", "DAT", embed_dim=32, depth=[2], num_heads=[2], upscale=2, split_size=[2, 4]),
    "CRAFT": _make("CRAFT", "CRAFT", embed_dim=32, depths=[2], num_heads=[2], window_size=8, split_size_0=2,
                   split_size_1=8, upscale=2),
    "ATD": _make("ATD", "ATD", embed_dim=12, depths=[2], num_heads=[2], window_size=4, category_size=16,
                 num_tokens=8, upscale=2, upsampler="pixelshuffledirect"),
    "DRCT": _make("DRCT", "DRCT", embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                  upsampler="pixelshuffle", gc=8),
    "GRL": _make("GRL", "GRL", embed_dim=12, depths=[1], num_heads_window=[2], num_heads_stripe=[2], window_size=4,
                 stripe_size=[4, 4], upscale=2, upsampler="pixelshuffledirect"),
    "SeemoRe": _make("SeemoRe", "SeemoRe", scale=2, num_experts=2, num_layers=1, embedding_dim=16),
    "MoSR": _make("MoSR", "MoSR", upscale=2, n_block=2, dim=16),
    "MoESR": _make("MoESR", "MoESR", scale=2, dim=16, n_blocks=1, n_block=1, upsample_dim=16),
    "FDAT": _make("FDAT", "FDAT", scale=2, embed_dim=16, num_groups=1, depth_per_group=1, num_heads=2,
                  window_size=4, mid_dim=16),
    "RealCUGAN": _make("RealCUGAN", "UpCunet2x"),
    "MMRealSR": _make("MMRealSR", "MMRealSR", num_in_ch=3, num_out_ch=3, scale=2, num_feat=16, num_block=1,
                      num_grow_ch=8, num_feats=[16, 16, 16, 16]),
    "IPT": _make("IPT", "IPT", scale=[2], n_feats=16, num_heads=2, num_layers=1),
    "AuraSR": _make("AuraSR", "AuraSR", dim=8, image_size=64, input_image_size=16),
}

# architecture id -> why it is not attacked: measured on the models above (torch 2.14, onnx2torch
# 1.5.15); `sreval inspect` of such a checkpoint ends in one line that names the reason
UNSUPPORTED = {
    "RCAN": "every exporter writes a graph that differs from the module by about 100 (outputs in [0, 1]): "
            "refused by the export check",
    "ATD": "no ONNX export of the sort (torch.sort with out=) its token dictionary uses",
    "GRL": "torch's TorchScript exporter crashes on it (SIGSEGV; sreval exports in a child process, so it "
           "ends in one line)",
    "MMRealSR": "spandrel's module of it fails on an RGB input at x2 (its first conv wants 12 channels, a "
                "pixel-unshuffled input), so there is nothing to export",
    "IPT": "nn.Fold (aten::col2im) has no ONNX export at opset 17 and no onnx2torch converter at 18",
    "AuraSR": "a 600M-parameter GAN upsampler whose style network has no small configuration to build "
              "in a test; not tried",
}
SMALL = {k: v for k, v in BUILD.items() if k not in UNSUPPORTED}

# architecture id -> why sreval does not attack it (not an SR model: restoration at scale 1,
# inpainting, or face restoration)
NOT_SR = {
    "GFPGAN": "face restoration (scale 1)",
    "RestoreFormer": "face restoration (scale 1)",
    "LaMa": "inpainting: takes an image and a mask",
    "SCUNet": "denoising (scale 1)",
    "FBCNN": "JPEG artefact removal (scale 1)",
    "Uformer": "restoration (scale 1)",
    "KBNet": "restoration (scale 1)",
    "FFTformer": "deblurring (scale 1)",
    "NAFNet": "restoration (scale 1)",
    "MixDehazeNet": "dehazing (scale 1)",
    "DRUNet": "denoising (scale 1)",
    "DnCNN": "denoising (scale 1)",
    "RetinexFormer": "low-light enhancement (scale 1)",
    "HVICIDNet": "low-light enhancement (scale 1)",
    "SAFMNBCIE": "brightness and contrast enhancement (scale 1)",
}


# ----------------------------------------------------------------------------- foreign ONNX files

EXPORT_SIDE = 32  # LR side of the example input; a fixed-size export takes exactly this


def _span_deploy() -> nn.Module:
    """SPAN as it is deployed: Conv3XC re-parametrises its three convolutions into one on every
    eval forward (a parameter write that crashes torch.export: SIGSEGV in fake-tensor dispatch,
    torch 2.14); done once here, the forward is the same function of the same weights. Built
    at img_range 1: at 255, random weights give outputs of +-10 (all clipped)."""
    net = _make("SPAN", "SPAN", num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4, img_range=1.0)()
    for m in net.modules():
        if hasattr(m, "update_params"):
            m.update_params()
            m.update_params = lambda: None
    return net


def _fdat() -> nn.Module:
    """FDAT with its upsampler's random weights x10: as initialised, its output is flat (std 0.003)."""
    net = BUILD["FDAT"]()
    with torch.no_grad():
        for p in net.upsampler.parameters():
            p.mul_(10)
    return net


@dataclass(frozen=True)
class OnnxCase:
    """A model as users export it to ONNX: per exporter, "dynamic" (batch, height and width
    dynamic; many such graphs bake batch 1 or the export size in, which sreval finds) or
    "fixed" (batch 1, EXPORT_SIDE square) where the exporter cannot export it dynamically or
    its dynamic graph is wrong by itself (FIXED_BECAUSE, measured with torch 2.14); `inputs`
    are the values of a file's non-image inputs; `seed` the random weights' (one whose outputs
    on photos are mostly inside [0, 1], which the test checks)."""

    build: Callable[[], nn.Module]
    scale: int
    seed: int = 0
    torchscript: str = "dynamic"
    dynamo: str = "dynamic"
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # exporter -> name -> value


# The modern families, spandrel's own code at the small configurations above.
ONNX_CASES: dict[str, OnnxCase] = {
    "SwinIR": OnnxCase(BUILD["SwinIR"], 2, seed=1),
    "Swin2SR": OnnxCase(BUILD["Swin2SR"], 2),
    "HAT": OnnxCase(BUILD["HAT"], 2),
    "DAT": OnnxCase(BUILD["DAT"], 2),
    "RGT": OnnxCase(BUILD["RGT"], 2),
    "CRAFT": OnnxCase(BUILD["CRAFT"], 2),
    "OmniSR": OnnxCase(BUILD["OmniSR"], 2, seed=4),
    "DITN": OnnxCase(BUILD["DITN"], 2, dynamo="fixed"),
    "FDAT": OnnxCase(_fdat, 2),
    "SPAN": OnnxCase(_span_deploy, 4, seed=3),
    "SAFMN": OnnxCase(BUILD["SAFMN"], 4, seed=4, torchscript="fixed"),
    "PLKSR": OnnxCase(BUILD["PLKSR"], 4),
    "RealPLKSR-DySample": OnnxCase(_make("PLKSR", "RealPLKSR", dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7,
                                         dysample=True), 2, seed=3, torchscript="fixed"),
    "MoSR": OnnxCase(BUILD["MoSR"], 2, seed=3),
    "MoESR": OnnxCase(BUILD["MoESR"], 2),
    "RealCUGAN": OnnxCase(BUILD["RealCUGAN"], 2, seed=7, inputs={"torchscript": {"alpha": "1"}}),
    "Compact": OnnxCase(BUILD["Compact"], 4),
}

# why a dynamic export is not used, as measured (sreval's module against the native one at 40x48)
FIXED_BECAUSE = {
    "DITN": "torch.export fails on it (TorchScript's dynamic graph has the export size baked in; sreval "
            "tiles it at that size, which the test's 32x32 images are)",
    "SAFMN": "TorchScript cannot export adaptive pooling to a size computed from the input",
    "RealPLKSR-DySample": "TorchScript's dynamic graph is wrong by itself at other sizes (off by 0.76 at 40x48: "
                          "DySample's sampling grid is baked in)",
}

# modules whose eval forward writes its result into its input (no gradient through it): PLKSR's
# partial convolutions; their training branch is the same arithmetic through split and cat
INPLACE_IN_EVAL = ("PLKConv2d", "RectSparsePLKConv2d", "SparsePLKConv2d")


def differentiable(net: nn.Module) -> nn.Module:
    """A copy of an eval-mode model that autograd can differentiate, computing the same."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if type(m).__name__ in INPLACE_IN_EVAL:
            m.train()
    return net
