"""Models as they are deployed (tests/deployed.py: real-weight zoo models and a TF-style graph,
each int8-quantised three ways, fp16, optimised by onnxruntime, simplified, and wrapped with
uint8 NHWC I/O, a [-1, 1] range, ImageNet mean/std, a rank-3 input or a second bicubic input).
For every (base, variant), with no override:

* `inspect` finds the convention the variant was built with;
* `evaluate` gives the PSNR of a direct onnxruntime computation (a raw session fed by hand)
  within 0.01 dB;
* `attack` (I-FGSM, few steps) gives the PSNR of the same attack on a PyTorch
  re-implementation of the deployed computation within 0.1 dB: the float module with the
  variant's wrapper written in torch, or, for the quantised files, an independent fake-quant
  interpreter of the graph (tests/onnx_reference.py).

Parametrized over the registry (timm-style).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sreval
from sreval.commands import inspect
from sreval.data import load_dataset
from sreval.io import imresize, imresize_torch, quantize, write_image
from tests.deployed import BASES, IMAGENET_MEAN, IMAGENET_STD, VARIANTS, base, native
from tests.onnx_reference import Reference
from tests.spandrel_cases import differentiable
from tests.test_foreign_exports import native_attack, sreval_cli

pytestmark = pytest.mark.slow  # real weights, quantisation and three commands per case

EVAL_TOL, ATTACK_TOL = 0.01, 0.1  # dB
BUDGETS, STEPS = "2/255,8/255", 3
QUANTISED = ("qdq-tensor-s8", "qdq-channel-u8", "qoperator", "dynamic")
CASES = [(b, v) for b in BASES for v in VARIANTS]
LR_SIDE = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deployed")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Per scale, two natural photo crops whose LR is LR_SIDE square."""
    out = {}
    for scale in sorted(set(BASES.values())):
        root = tmp_path_factory.mktemp(f"x{scale}") / "set"
        (root / "HR").mkdir(parents=True)
        side = LR_SIDE * scale
        for s in load_dataset("default", 1, limit=2):
            h, w = s.hr.shape[:2]
            write_image(root / "HR" / f"{s.name}.png",
                        s.hr[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2])
        out[scale] = root
    return out


_BUILT: dict[tuple[str, str], Path] = {}


def build(name: str, variant: str, folder: Path, data: Path) -> Path:
    if (name, "float") not in _BUILT:
        _BUILT[name, "float"] = base(name, folder)
    if (name, variant) not in _BUILT:
        crops = [s.lr.transpose(2, 0, 1)[None].astype(np.float32) for s in load_dataset(data, BASES[name])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BUILT[name, variant] = VARIANTS[variant](_BUILT[name, "float"], folder / f"{name}-{variant}.onnx", crops)
    return _BUILT[name, variant]


# ----------------------------------------------------------------------------- what each variant is


def expected(name: str, variant: str) -> dict[str, Any]:
    conv: dict[str, Any] = {"range": 1.0, "normalize": "none", "dtype": "float32"}
    if variant == "uint8-nhwc":
        conv.update(range=255.0, dtype="uint8", layout="nhwc")
    elif variant == "range-pm1":
        conv["normalize"] = "signed"
    elif variant == "imagenet":
        conv["normalize"] = "imagenet"
    return conv


def direct(path: Path, name: str, variant: str, lr: np.ndarray, scale: int) -> np.ndarray:
    """The SR image by hand: a raw onnxruntime session fed as the variant was built to be fed."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nhwc_in = name == "tf-style" or variant == "uint8-nhwc"
    x = lr.astype(np.float64)
    mean, std = (0.5, 0.5) if variant == "range-pm1" else (np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)) \
        if variant == "imagenet" else (0.0, 1.0)
    x = (x - mean) / std
    if variant == "uint8-nhwc":
        x = np.clip(np.round(lr * 255.0), 0, 255)
    arr = x if nhwc_in else x.transpose(2, 0, 1)
    arr = arr.astype(np.uint8 if variant == "uint8-nhwc" else np.float32)
    feed = {sess.get_inputs()[0].name: arr if variant == "rank3" else arr[None]}
    if variant == "bicubic-input":
        up = imresize(lr, float(scale))
        feed[sess.get_inputs()[1].name] = (up if nhwc_in else up.transpose(2, 0, 1))[None].astype(np.float32)
    out = np.asarray(sess.run(None, feed)[0], dtype=np.float64)
    out = out if variant == "rank3" else out[0]
    nhwc_out = variant == "uint8-nhwc"
    img = out if nhwc_out else out.transpose(1, 2, 0)
    img = img / 255.0 if variant == "uint8-nhwc" else img * std + mean
    return quantize(np.clip(img, 0.0, 1.0).astype(np.float32))


def round_ste(x: Tensor) -> Tensor:
    return torch.round(x).detach() + (x - x.detach())


def clip(x: Tensor, low: float, high: float) -> Tensor:
    """Saturation whose gradient passes at the bounds themselves (torch.clamp passes none
    there with number bounds, half with tensor bounds; a rounded value sits on them)."""
    return torch.where(x < low, low, torch.where(x > high, high, x))


class Deployed(nn.Module):
    """The deployed computation in PyTorch, NCHW RGB [0, 1] in and out."""

    def __init__(self, name: str, variant: str, path: Path, scale: int):
        super().__init__()
        self.variant, self.scale, self.tf = variant, scale, name == "tf-style"
        self.net = differentiable(native(name))
        if variant == "fp16":
            self.net = self.net.half()
        self.net = self.net.to(memory_format=torch.channels_last)  # as sreval's attack on CPU
        self.graph = Reference(onnx.load(str(path))) if variant in QUANTISED else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.graph is not None:  # the quantised file, interpreted, one image at a time as deployed
            xs = x.permute(0, 2, 3, 1) if self.tf else x
            return torch.cat([self.graph(xs[i:i + 1]) for i in range(xs.shape[0])])
        if self.variant == "uint8-nhwc":
            y = self.net(round_ste(clip(x * 255.0, 0.0, 255.0)) / 255.0)
            return clip(round_ste(y * 255.0), 0.0, 255.0) / 255.0
        if self.variant == "fp16":  # float16 weights and activations, float32 I/O
            return self.net(x.half()).float()
        y = self.net(x)
        if self.variant == "bicubic-input":  # + (bicubic upscale - the graph's bilinear one)
            y = y + imresize_torch(x, scale=self.scale) - F.interpolate(x, scale_factor=self.scale, mode="bilinear")
        return y


# ----------------------------------------------------------------------------- the test


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{b}-{v}" for b, v in CASES])
def test_a_deployed_model_works_end_to_end(name: str, variant: str, folder: Path, datasets: dict[int, Path],
                                           one_thread: None, tmp_path: Path) -> None:
    scale = BASES[name]
    data = datasets[scale]
    path = build(name, variant, folder, data)

    info = inspect(path, device="cpu")
    for field, value in expected(name, variant).items():
        assert info["conventions"][field] == value, (field, info["conventions"], info.get("detected"))
    assert info["scale"] == scale and "upscale" in info["sources"] if variant == "bicubic-input" else True

    report = sreval_cli("evaluate", path, "--data", data, out=tmp_path / "eval")
    for s, row in zip(load_dataset(data, scale), report["results"], strict=True):
        want = sreval.psnr(direct(path, name, variant, s.lr, scale), s.hr, y=True, shave=scale)
        assert abs(row["psnr_sr"] - want) <= EVAL_TOL, (s.name, row["psnr_sr"], want)

    rep = sreval_cli("attack", path, "--data", data, "--alpha", BUDGETS, "--steps", STEPS, "--no-sanity",
                     out=tmp_path / "attack")
    assert rep["config"]["method"] == "ifgsm"
    budgets = sorted({row["alpha"] for row in rep["results"]})
    got = [row["psnr_sr"] for row in rep["results"]]
    want = native_attack(Deployed(name, variant, path, scale).eval(), data, scale, budgets, STEPS)
    assert np.allclose(got, want, atol=ATTACK_TOL, rtol=0), (got, want)
