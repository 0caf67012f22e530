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

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from sreval.cli import app
from sreval.commands import evaluate
from sreval.exporters import ARCHS, load_weights, read_checkpoint
from sreval.model import SRModel
from sreval.zoo import open_model

# Set5 x4, Y, shave 4: measured by the reference protocol (VDSR: unrounded MATLAB bicubic input)
REFERENCE = {"fsrcnn": 30.51, "vdsr": 31.43, "lapsrn": 31.62, "rfdn": 32.16}
WEIGHTS = {"fsrcnn": "fsrcnn/fsrcnn_x4.pth", "vdsr": "vdsr/vdsr_state_dict.pth",
           "lapsrn": "lapsrn/lapsrn_x4_state_dict.pth", "rfdn": "rfdn/RFDN_AIM.pth"}


def native_onnx(name: str, assets: Path, folder: Path) -> Path:
    """The architecture with its official weights, exported as the authors' code runs it:
    no range wrapper, Y-only in and out, all outputs; dynamic batch/height/width; opset 17."""
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
    assert (conv["color"], conv["scale"], src["scale"]) == ("y", 4, "shape")
    assert src["color"].startswith("shape: one channel, studio-range Y") and "--color yfull" in src["color"]
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


# ----------------------------------------------------------------------------- normalised deployments


def normalized_variant(src: Path, dst: Path, mean: list[float], std: list[float], hidden: bool = False) -> Path:
    """The model as deployed behind a normalisation: it reads and writes (x - mean) / std
    (a foreign file: no sreval metadata). `hidden`: the input's de-normalisation is a 1x1
    Conv (as a network whose first layer absorbed it), which the graph's steps do not show."""
    m = onnx.load(str(src))
    g = m.graph
    inp, out = g.input[0].name, g.output[0].name
    g.initializer.extend([numpy_helper.from_array(np.array(v, np.float32).reshape(1, -1, 1, 1), name)
                          for v, name in ((mean, "nv_mean"), (std, "nv_std"))])
    g.initializer.extend([numpy_helper.from_array(np.diag(np.array(std, np.float32)).reshape(3, 3, 1, 1), "nv_w"),
                          numpy_helper.from_array(np.array(mean, np.float32), "nv_b")])
    for node in g.node:
        node.input[:] = ["nv_in01" if i == inp else i for i in node.input]
        node.output[:] = ["nv_out01" if o == out else o for o in node.output]
    first = ([helper.make_node("Conv", [inp, "nv_w", "nv_b"], ["nv_in01"])] if hidden else
             [helper.make_node("Mul", [inp, "nv_std"], ["nv_scaled"]), helper.make_node("Add", ["nv_scaled", "nv_mean"], ["nv_in01"])])
    nodes = [*first,
             *g.node,
             helper.make_node("Sub", ["nv_out01", "nv_mean"], ["nv_centred"]), helper.make_node("Div", ["nv_centred", "nv_std"], [out])]
    del g.node[:]
    g.node.extend(nodes)
    del m.metadata_props[:]
    onnx.save(m, str(dst))
    return dst


NORMALISED = {"signed": ([0.5] * 3, [0.5] * 3, ["--range", "-1,1"]),
              "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], ["--normalize", "imagenet"])}


@pytest.fixture(scope="module")
def carn_m(assets: Path) -> Path:
    return open_model("carn-m", device="cpu").path


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(NORMALISED))
def test_a_normalised_deployment_gives_the_plain_models_numbers(kind: str, carn_m: Path, tmp_path: Path,
                                                                 assets: Path) -> None:
    mean, std, option = NORMALISED[kind]
    path = normalized_variant(carn_m, tmp_path / f"{kind}.onnx", mean, std)
    common = ["--data", "Set5", "--data-root", assets / "datasets", "--limit", "2", "--device", "cpu"]

    def report(model: Path, *args: object) -> dict:
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        r = CliRunner().invoke(app, [str(a) for a in (*args[:1], model, *args[1:], *common, "--out", out)])
        assert r.exit_code == 0, r.output
        return json.loads((out / "report.json").read_text())

    plain = [row["psnr_sr"] for row in report(carn_m, "attack", "--alpha", "8/255", "--steps", 3, "--no-sanity")["results"]]
    given = report(path, "attack", *option, "--alpha", "8/255", "--steps", 3, "--no-sanity")
    assert given["model"]["conventions"]["normalize"] == kind
    assert [row["psnr_sr"] for row in given["results"]] == pytest.approx(plain, abs=0.1)
    clean = report(path, "evaluate", *option, "--runtime", "onnxruntime")
    base = report(carn_m, "evaluate", "--runtime", "onnxruntime")
    assert [r["psnr_sr"] for r in clean["results"]] == pytest.approx([r["psnr_sr"] for r in base["results"]], abs=0.01)


@pytest.mark.slow
def test_an_undetectable_normalisation_is_said(carn_m: Path, tmp_path: Path) -> None:
    """Fed [0, 1], a [-1, 1] wrapper of a trained network scores within 0.2 dB of its own
    convention (SR networks are nearly equivariant under affine intensity changes), while the
    attack's numbers differ by 1 dB. Where the graph's first steps undo the normalisation,
    they decide; where they do not show it, every load says so and names the options."""
    shown = SRModel(normalized_variant(carn_m, tmp_path / "shown.onnx", [0.5] * 3, [0.5] * 3), device="cpu")
    f = shown.detection.fields["normalize"]
    assert (f.value, f.adopted, f.by_graph, shown.conventions.normalize) == ("signed", True, True, "signed")
    path = normalized_variant(carn_m, tmp_path / "signed.onnx", [0.5] * 3, [0.5] * 3, hidden=True)
    with pytest.warns(UserWarning, match="normalisation cannot be told apart.*--range -1,1 or --normalize"):
        m = SRModel(path, device="cpu")
    assert set(m.detection.fields["normalize"].alike) | {m.detection.fields["normalize"].value} >= {"none", "signed"}
    plain = SRModel(normalized_variant(carn_m, tmp_path / "plain.onnx", [0.0] * 3, [1.0] * 3), device="cpu")
    f = plain.detection.fields["normalize"]
    assert f.value == "none" and f.adopted and f.margin_db > 3  # a plain model is not in doubt
