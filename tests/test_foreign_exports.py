"""Any ONNX SR model, as users export it: spandrel's real architecture code (small random
models, tests/spandrel_cases.py ONNX_CASES) exported with both torch exporters (TorchScript,
opset 17; dynamo, opset 20), and a TensorFlow-style graph (NHWC in, NCHW out) built with
onnx.helper. For every file: `sreval inspect` succeeds, `sreval evaluate` gives a direct
onnxruntime computation's PSNR, and `sreval attack` gives the PSNR of the same attack on the
native PyTorch module, one budget alone and several batched. Parametrized over the registry
(timm-style): a new entry is tested without a new test."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn
from typer.testing import CliRunner

import sreval
from sreval.cli import app
from sreval.data import load_dataset
from sreval.evaluation import measure, super_resolve, to_tensor
from sreval.io import write_image
from tests.spandrel_cases import EXPORT_SIDE, ONNX_CASES, differentiable
from tests.test_checkpoints import _spandrel
from tests.test_conventions import direct_sr

pytestmark = pytest.mark.slow  # real exports / real weights / a fresh venv: not in the fast lane

EVAL_TOL = 0.01  # dB, against a raw onnxruntime session
ATTACK_TOL = 0.1  # dB, against the same attack on the native module
ALONE, BATCHED = "4/255", "2/255,8/255"
STEPS = 3
TF_STYLE = "TF-style (onnx.helper)"
TF_LAYOUTS = {"layout": "nhwc", "out_layout": "nchw"}
CASES = [(f, e) for f in ONNX_CASES for e in ("torchscript", "dynamo")] + [(TF_STYLE, "tf2onnx")]


@pytest.fixture(autouse=True, scope="module")
def _needs_spandrel() -> None:
    _spandrel()


# ----------------------------------------------------------------------------- the files


@functools.cache
def native(family: str) -> nn.Module:
    if family == TF_STYLE:
        return TfStyle().eval()
    torch.manual_seed(ONNX_CASES[family].seed)
    return ONNX_CASES[family].build().eval()


def export(family: str, exporter: str, folder: Path) -> Path:
    """The file a user would get: dynamic batch and size, or batch 1 at EXPORT_SIDE."""
    path = folder / f"{family}-{exporter}.onnx"
    if path.is_file():
        return path
    net = native(family)
    if family == TF_STYLE:
        return net.to_onnx(path)
    fixed = getattr(ONNX_CASES[family], exporter) == "fixed"
    x = torch.rand(1, 3, EXPORT_SIDE, EXPORT_SIDE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            auto = torch.export.Dim.AUTO  # torch.export works out which dims may stay dynamic
            shapes = None if fixed else {"x": {0: auto, 2: auto, 3: auto}}
            torch.onnx.export(net, (x,), str(path), dynamo=True, opset_version=20, dynamic_shapes=shapes,
                              input_names=["lr"], output_names=["sr"], verbose=False)
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["lr"],
                              output_names=["sr"], dynamic_axes=None if fixed else {"lr": axes, "sr": axes})
    return path


class TfStyle(nn.Module):
    """What tf2onnx writes for an ESPCN-like Keras model (OpenCV's dnn_superres zoo): an NHWC
    input, a Transpose, convolutions, a DCR DepthToSpace and an NCHW output; dynamic sizes.
    The module computes the same function on NCHW [0, 1] RGB."""

    scale = 2

    def __init__(self) -> None:
        super().__init__()
        out = 3 * self.scale ** 2
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, out, 3, padding=1)
        self.skip = nn.Conv2d(3, out, 1, bias=False)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            # DCR channel (i*s + j)*3 + c holds colour c of sub-pixel (i, j): nearest upsampling
            self.skip.weight[:, :, 0, 0] = torch.eye(3).repeat(self.scale ** 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.c2(torch.relu(self.c1(x))) + self.skip(x)
        n, _, h, w = y.shape
        s = self.scale
        return y.view(n, s, s, 3, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, 3, h * s, w * s)

    def to_onnx(self, path: Path) -> Path:
        init = [numpy_helper.from_array(t.detach().numpy(), k) for k, t in self.state_dict().items()]
        nodes = [
            helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "c1.weight", "c1.bias"], ["h1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h1"], ["r1"]),
            helper.make_node("Conv", ["r1", "c2.weight", "c2.bias"], ["h2"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["nchw", "skip.weight"], ["s"]),
            helper.make_node("Add", ["h2", "s"], ["sum"]),
            helper.make_node("DepthToSpace", ["sum"], ["output_1"], blocksize=self.scale, mode="DCR"),
        ]
        graph = helper.make_graph(
            nodes, "tf2onnx", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["n", "h", "w", 3])],
            [helper.make_tensor_value_info("output_1", TensorProto.FLOAT, ["n", 3, "H", "W"])], initializer=init)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx"),
                  str(path))
        return path


def _scale(family: str) -> int:
    return TfStyle.scale if family == TF_STYLE else ONNX_CASES[family].scale


def _inputs(family: str, exporter: str) -> dict[str, str]:
    return {} if family == TF_STYLE else ONNX_CASES[family].inputs.get(exporter, {})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Per scale, two natural photo crops whose LR is EXPORT_SIDE square (what a fixed file takes)."""
    out = {}
    for scale in sorted({_scale(f) for f, _ in CASES}):
        root = tmp_path_factory.mktemp(f"x{scale}") / "set"
        (root / "HR").mkdir(parents=True)
        side = EXPORT_SIDE * scale
        for s in load_dataset("default", 1, limit=2):
            h, w = s.hr.shape[:2]
            write_image(root / "HR" / f"{s.name}.png", s.hr[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2])
        out[scale] = root
    return out


# ----------------------------------------------------------------------------- references


def native_attack(net: nn.Module, data: Path, scale: int, budgets: list[float], steps: int = STEPS) -> list[float]:
    """SR PSNR of the I-FGSM rows (image-major, then budget) on the native module."""
    out = []
    for i, s in enumerate(load_dataset(data, scale)):
        x0, hr = to_tensor(s.lr), to_tensor(s.hr)
        xs, _ = sreval.IFGSM(net, eps=budgets, steps=steps).run(x0, hr, ids=[i])
        sr0 = super_resolve(net, x0)
        out += [measure(x0, xs[k:k + 1], sr0, super_resolve(net, xs[k:k + 1]), scale)["psnr_sr"]
                for k in range(len(budgets))]
    return out


# ----------------------------------------------------------------------------- the test


def sreval_cli(*args: object, out: Path) -> dict:
    """A command of the CLI, as a user runs it; its report.json."""
    r = CliRunner().invoke(app, [str(a) for a in args] + ["--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("family,exporter", CASES, ids=[f"{f}-{e}" for f, e in CASES])
def test_a_foreign_export_works_end_to_end(family: str, exporter: str, files: Path, datasets: dict[int, Path],
                                           one_thread: None, tmp_path: Path) -> None:
    path = export(family, exporter, files)
    scale, inputs = _scale(family), _inputs(family, exporter)
    data = datasets[scale]
    given = [a for k, v in inputs.items() for a in ("--input-value", f"{k}={v}")]
    r = CliRunner().invoke(app, ["inspect", str(path), "--device", "cpu", *given])
    assert r.exit_code == 0 and "parity" in r.output, r.output

    report = sreval_cli("evaluate", path, "--data", data, *given, out=tmp_path / "eval")
    assert report["config"]["runtime"] == "torch" and report["model"]["convention_sources"]["batch"]
    for s, row in zip(load_dataset(data, scale), report["results"], strict=True):
        sr = direct_sr(path, s.lr, scale=scale, inputs=inputs, **(TF_LAYOUTS if family == TF_STYLE else {}))
        want = sreval.psnr(sr, s.hr, y=True, shave=scale)
        assert abs(row["psnr_sr"] - want) <= EVAL_TOL, (s.name, row["psnr_sr"], want)

    net = differentiable(native(family))
    with torch.no_grad():  # random weights whose SR is mostly clipped would make every PSNR vacuous
        sr = torch.cat([net(to_tensor(s.lr)) for s in load_dataset(data, scale)])
    assert ((sr >= 0) & (sr <= 1)).float().mean() >= 0.5 and sr.clamp(0, 1).std() >= 0.05
    for alpha in (ALONE, BATCHED):
        rep = sreval_cli("attack", path, "--data", data, "--alpha", alpha, "--steps", STEPS, "--no-sanity", *given,
                         out=tmp_path / alpha.replace("/", "_"))
        budgets = sorted({row["alpha"] for row in rep["results"]})
        got = [row["psnr_sr"] for row in rep["results"]]
        want = native_attack(net, data, scale, [row["alpha"] for row in rep["results"][:len(budgets)]])
        assert np.allclose(got, want, atol=ATTACK_TOL, rtol=0), (alpha, got, want)
