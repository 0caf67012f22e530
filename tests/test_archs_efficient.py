"""Efficient / classic SR architectures: key layouts, gradients, and real weights on Set5."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sreval.exporters import fsrcnn  # importing the package registers every ArchSpec
from sreval.exporters.common import ARCHS, ArchSpec, load_weights, read_checkpoint
from sreval.errors import ModelError

NAMES = ["imdn", "rfdn", "pan", "srvgg_compact", "fsrcnn", "vdsr", "lapsrn"]
# the official checkpoints' own key prefix, which the spec's fix_state_dict removes
CHECKPOINT_PREFIX = {"imdn": "module."}


# ----------------------------------------------------------------------------- helpers


def need(assets: Path, rel: str) -> Path:
    """A file under the assets folder (conftest's `assets` fixture); missing: skip, or fail on CI."""
    path = assets / rel
    if not path.exists():
        (pytest.fail if os.environ.get("CI", "").lower() == "true" else pytest.skip)(
            f"asset missing: {path}"
        )
    return path


def official_layout(name: str, module: nn.Module) -> dict[str, Tensor]:
    """A random state dict with the keys and shapes of the official checkpoint."""
    prefix = CHECKPOINT_PREFIX.get(name, "")
    gen = torch.Generator().manual_seed(0)
    return {
        prefix + k: torch.randn(v.shape, generator=gen) * 0.05
        for k, v in module.state_dict().items()
    }


def sample_input(spec: ArchSpec, scale: int, size: int = 16) -> Tensor:
    """Input in the module's own convention; VDSR takes the pre-upsampled (HR-size) image."""
    ch = 1 if spec.channels == "y" else 3
    side = size * scale if spec.preupsampled else size
    x = torch.rand(1, ch, side, side, generator=torch.Generator().manual_seed(1))
    return x * spec.value_range


def final_output(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    return out[-1] if isinstance(out, tuple) else out


def cases() -> list[tuple[str, int]]:
    return [(n, s) for n in NAMES for s in ARCHS[n].scales]


# ----------------------------------------------------------------------------- random weights


@pytest.mark.parametrize("name", NAMES)
def test_registered(name: str) -> None:
    spec = ARCHS[name]
    assert spec.paper and spec.extra.get("licence") and spec.extra.get("weights")


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_loads_strict(name: str) -> None:
    spec = ARCHS[name]
    module = spec.build(spec.scales[-1])
    sd = official_layout(name, module)
    load_weights(module, spec, sd, "random")
    prefix = CHECKPOINT_PREFIX.get(name, "")
    for k, v in module.state_dict().items():
        assert torch.equal(v, sd[prefix + k]), k


@pytest.mark.parametrize("name", NAMES)
def test_other_arch_refused_naming_keys(name: str) -> None:
    spec = ARCHS[name]
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    other_sd = official_layout(other, ARCHS[other].build(ARCHS[other].scales[-1]))
    with pytest.raises(ModelError, match=f"not a {name} checkpoint: missing keys \\[\\w"):
        load_weights(spec.build(spec.scales[-1]), spec, other_sd, "other.pth")


def test_shape_mismatch_names_tensor() -> None:
    spec = ARCHS["fsrcnn"]
    small = fsrcnn.FSRCNN(d=32)
    with pytest.raises(ModelError, match=r"first_part\.0\.weight has shape \(32, 1, 5, 5\)"):
        load_weights(spec.build(4), spec, small.state_dict(), "small.pth")


@pytest.mark.parametrize(("name", "scale"), cases())
def test_forward_and_input_gradient(name: str, scale: int) -> None:
    spec = ARCHS[name]
    module = spec.build(scale).eval()
    x = sample_input(spec, scale).requires_grad_(True)
    out = final_output(module(x))
    side = x.shape[-1] if spec.preupsampled else x.shape[-1] * scale
    assert out.shape == (1, x.shape[1], side, side)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_lapsrn_returns_both_pyramid_levels() -> None:
    x2, x4 = ARCHS["lapsrn"].build(4).eval()(torch.rand(1, 1, 10, 12))
    assert x2.shape == (1, 1, 20, 24) and x4.shape == (1, 1, 40, 48)


def test_srvgg_downscaled_variants_share_weights() -> None:
    spec = ARCHS["srvgg_compact"]
    keys = {s: set(spec.build(s).state_dict()) for s in spec.scales}
    assert keys[2] == keys[3] == keys[4]


# ----------------------------------------------------------------------------- real weights

WEIGHTS = {
    "imdn": "imdn/IMDN_x4.pth",
    "rfdn": "rfdn/RFDN_AIM.pth",
    "pan": "pan/PANx4_DF2K.pth",
    "fsrcnn": "fsrcnn/fsrcnn_x4.pth",
    "vdsr": "vdsr/vdsr_state_dict.pth",
    "lapsrn": "lapsrn/lapsrn_x4_state_dict.pth",
}
IMAGES = ("bird", "butterfly")
# Measured with exactly this protocol (torch 2.14.1 CPU) on these two images; the same code on
# all five Set5 images reproduces SOURCES.md's Set5 column (e.g. IMDN 32.21, VDSR 31.24).
EXPECTED = {
    "bicubic": (30.18, 22.10),
    "imdn": (35.05, 28.56),
    "rfdn": (34.90, 28.64),
    "pan": (35.01, 28.35),
    "fsrcnn": (32.62, 25.39),
    "vdsr": (33.36, 27.10),
    "lapsrn": (33.79, 27.52),
}


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1].astype(np.float64)


def matlab_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr luma (studio range, 16..235) from RGB in 0..255."""
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def bicubic_up(rgb: np.ndarray, scale: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(rgb.astype(np.uint8))
    size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
    return np.asarray(img.resize(size, Image.BICUBIC)).astype(np.float64)


def psnr_y(sr_y: np.ndarray, hr_y: np.ndarray, shave: int = 4) -> float:
    err = (sr_y - hr_y)[shave:-shave, shave:-shave]
    return float(10 * np.log10(255.0**2 / np.mean(err**2)))


def to_8bit(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255)


def super_resolve_y(spec: ArchSpec, module: nn.Module, lr: np.ndarray) -> np.ndarray:
    """SR luma (0..255, rounded to 8 bits) under each model's own input convention."""
    with torch.no_grad():
        if spec.channels == "rgb":
            x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float()[None] / 255
            out = module(x * spec.value_range)[0].numpy().transpose(1, 2, 0)
            return matlab_y(to_8bit(out / spec.value_range))
        src = bicubic_up(lr, 4) if spec.preupsampled else lr
        y = torch.from_numpy(matlab_y(src) / 255).float()[None, None]
        return to_8bit(final_output(module(y))[0, 0].numpy())


def test_bicubic_reference(assets: Path) -> None:
    for img, expected in zip(IMAGES, EXPECTED["bicubic"]):
        hr = read_rgb(need(assets, f"datasets/Set5/HR/{img}.png"))
        lr = read_rgb(need(assets, f"datasets/Set5/LR_bicubic/X4/{img}x4.png"))
        psnr = psnr_y(matlab_y(bicubic_up(lr, 4)), matlab_y(hr))
        assert psnr == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_real_weights_set5(name: str, assets: Path) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    spec = ARCHS[name]
    module = spec.build(4).eval()
    load_weights(module, spec, read_checkpoint(need(assets, f"weights/{WEIGHTS[name]}")), name)
    for img, expected, bicubic in zip(IMAGES, EXPECTED[name], EXPECTED["bicubic"]):
        hr = read_rgb(need(assets, f"datasets/Set5/HR/{img}.png"))
        lr = read_rgb(need(assets, f"datasets/Set5/LR_bicubic/X4/{img}x4.png"))
        psnr = psnr_y(super_resolve_y(spec, module, lr), matlab_y(hr))
        assert psnr > bicubic + 2.0, (img, psnr)
        assert psnr == pytest.approx(expected, abs=0.05), img


@pytest.mark.parametrize("legacy", ["vdsr/model_epoch_50.pth", "lapsrn/model_epoch_100.pth"])
def test_legacy_whole_model_pickles_refused(legacy: str, assets: Path) -> None:
    with pytest.raises(ModelError, match="refusing to unpickle.*whole pickled model"):
        read_checkpoint(need(assets, f"weights/{legacy}"))
