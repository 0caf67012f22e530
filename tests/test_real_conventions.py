"""Real weights in their NATIVE conventions, exported here without sreval metadata (foreign
files): FSRCNN (Y only), VDSR (Y, pre-upsampled), LapSRN (Y, two outputs), RFDN (0..255).
Through sreval they must reach the clean Set5 x4 PSNR (Y, shave 4) that the reference
protocol of shared/assets/SOURCES.md measures, within 0.1 dB.

Clean metrics need no gradients: the Set5 runs use `--runtime onnxruntime` (the reference,
twice as fast as the converted module on CPU); the conversion is checked by a parity test
on small inputs (FSRCNN here; the synthetic models of test_conventions cover each convention
on the PyTorch path).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sreval.cli import app
from sreval.commands import evaluate
from sreval.model import SRModel

# Set5 x4, Y, shave 4: measured by the reference protocol (VDSR: unrounded MATLAB bicubic input)
REFERENCE = {"fsrcnn": 30.51, "vdsr": 31.43, "lapsrn": 31.62, "rfdn": 32.16}
WEIGHTS = {"fsrcnn": "fsrcnn/fsrcnn_x4.pth", "vdsr": "vdsr/vdsr_state_dict.pth",
           "lapsrn": "lapsrn/lapsrn_x4_state_dict.pth", "rfdn": "rfdn/RFDN_AIM.pth"}


def native_onnx(name: str, assets: Path, folder: Path) -> Path:
    """The architecture with its official weights, exported as the authors' code runs it:
    no range wrapper, Y-only in and out, all outputs; dynamic batch/height/width; opset 17."""
    from sreval.exporters import ARCHS, load_weights, read_checkpoint

    spec = ARCHS[name]
    net = spec.build(4).eval()
    load_weights(net, spec, read_checkpoint(assets / "weights" / WEIGHTS[name]), WEIGHTS[name])
    channels = 1 if spec.channels == "y" else 3
    x = torch.rand(1, channels, 24, 24)
    with torch.no_grad():
        y = net(x)
    outs = [f"out{i}" for i in range(len(y) if isinstance(y, tuple) else 1)]
    axes = {0: "n", 2: "h", 3: "w"}
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=outs, dynamic_axes={n: axes for n in ["input", *outs]})
    return path


@pytest.fixture(scope="module")
def models(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("native")
    return {name: native_onnx(name, assets, folder) for name in REFERENCE}


def _set5_psnr(report: dict) -> float:
    assert report["data"]["n_images"] == 5
    (summary,) = report["summary"]
    return summary["psnr_sr"]


def test_fsrcnn_y_only(models: dict[str, Path], tmp_path: Path) -> None:
    rep = evaluate(models["fsrcnn"], "Set5", out=tmp_path, device="cpu", runtime="onnxruntime")
    conv, src = rep["model"]["conventions"], rep["model"]["convention_sources"]
    assert (conv["color"], conv["scale"], src["color"], src["scale"]) == ("y", 4, "shape", "shape")
    assert conv["range"] == 1.0 and src["range"] == "detected"
    assert abs(_set5_psnr(rep) - REFERENCE["fsrcnn"]) <= 0.1


@pytest.mark.slow
def test_vdsr_preupsampled_through_the_cli(models: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["evaluate", str(models["vdsr"]), "--data", "Set5", "--out", str(tmp_path),
                                 "--device", "cpu", "--runtime", "onnxruntime", "--scale", "4",
                                 "--preupsampled", "--color", "y", "--range", "1"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "report.json").read_text())
    conv, src = rep["model"]["conventions"], rep["model"]["convention_sources"]
    assert conv["preupsampled"] is True and src["preupsampled"] == "override" and src["scale"] == "override"
    assert abs(_set5_psnr(rep) - REFERENCE["vdsr"]) <= 0.1


def test_lapsrn_picks_the_x4_output(models: dict[str, Path], tmp_path: Path) -> None:
    rep = evaluate(models["lapsrn"], "Set5", out=tmp_path, device="cpu", runtime="onnxruntime")
    conv = rep["model"]["conventions"]
    assert (conv["output"], conv["scale"], conv["color"]) == (1, 4, "y")
    assert abs(_set5_psnr(rep) - REFERENCE["lapsrn"]) <= 0.1


def test_rfdn_range_255_detected(models: dict[str, Path], tmp_path: Path) -> None:
    rep = evaluate(models["rfdn"], "Set5", out=tmp_path, device="cpu", runtime="onnxruntime")
    conv, src = rep["model"]["conventions"], rep["model"]["convention_sources"]
    assert conv["range"] == 255.0 and src["range"] == "detected"
    det = rep["model"]["detection"]["fields"]["range"]
    assert det["adopted"] and det["margin_db"] >= 3.0
    assert abs(_set5_psnr(rep) - REFERENCE["rfdn"]) <= 0.1


def test_conversion_parity_and_gradients(models: dict[str, Path]) -> None:
    # one model only: converting the others costs 8 to 14 s each on 2 busy cores
    m = SRModel(models["fsrcnn"], device="cpu", detect_conventions=False)
    p = m.check_parity()
    assert p.ok and p.max_diff <= 1e-4 and p.grad_l1 > 0
