"""The CLI through typer's CliRunner: the happy paths and every bad input of the core issue."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from typer.testing import CliRunner

from sreval.cli import app
from sreval.io import write_image
from sreval.model import SRModel
from tests.test_model import Explodes, NotSR
from tests.tiny import TinySR, export

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny.onnx")


def make_dataset(root: Path, n: int = 2, hw: tuple[int, int] = (24, 20), scale: int = 2) -> Path:
    rng = np.random.default_rng(0)
    (root / "HR").mkdir(parents=True)
    for i in range(n):
        write_image(root / "HR" / f"img{i}.png", rng.random((hw[0], hw[1], 3)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("d") / "set")


@pytest.fixture(autouse=True)
def own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test in a folder of its own: commands without --out claim runs/<command> there, and
    two xdist workers in one folder would find each other's claim."""
    monkeypatch.chdir(tmp_path)


def run(*args: str) -> "object":
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: "object", *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for n in needles:
        assert n.lower() in text.lower(), text


def test_attack_writes_report_and_csv(tiny: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("attack", tiny, "--data", data, "--alpha", "1/255,8/255", "--steps", "3",
            "--out", out, "--device", "cpu", "--save-images")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "sreval.report/2"
    assert rep["model"]["scale"] == 2 and len(rep["model"]["sha256"]) == 64
    assert rep["model"]["conventions"]["color"] == "rgb"
    assert {"config", "environment", "conventions"} <= rep.keys()
    assert len(rep["results"]) == 4
    for row in rep["results"]:
        assert row["attack"] == "basic" and isinstance(row["alpha"], float)
        for k in ("psnr_lr", "psnr_sr", "psnr_lr_rgb", "psnr_sr_rgb"):
            assert isinstance(row[k], float)
    summ = {s["alpha"]: s for s in rep["summary"]}
    assert summ[1 / 255]["n"] == 2 and summ[8 / 255]["psnr_lr"] < summ[1 / 255]["psnr_lr"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and "psnr_sr" in rows[0]
    assert (out / "images" / "img0_a8_lr.png").exists()
    assert not list(out.glob(".*.tmp"))


def test_evaluate_writes_clean_rows(tiny: Path, data: Path, tmp_path: Path) -> None:
    r = run("evaluate", tiny, "--data", data, "--out", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "report.json").read_text())
    assert [row["attack"] for row in rep["results"]] == ["none", "none"]
    assert all(isinstance(row["ssim_sr"], float) for row in rep["results"])
    # an HR-only folder: the LR images are generated, and both the report and the output say so
    assert rep["data"]["lr"] == "generated" and "LR generated from the HR images" in r.output


def test_inspect_prints_conventions(tiny: Path) -> None:
    r = run("inspect", tiny, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "scale" in r.output and "parity" in r.output and "ok" in r.output


def test_missing_model(tmp_path: Path, data: Path) -> None:
    assert_one_line_error(run("attack", tmp_path / "none.onnx", "--data", data), "not found")


def test_non_onnx_and_truncated(tmp_path: Path, data: Path, tiny: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    assert_one_line_error(run("attack", junk, "--data", data), "onnx")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny.read_bytes()[:200])
    assert_one_line_error(run("evaluate", trunc, "--data", data), "trunc.onnx")


@pytest.mark.parametrize("module,needle", [(NotSR(), "integer multiple"), (Explodes(), "nan or inf")])
def test_not_sr_and_nan(tmp_path: Path, data: Path, module: torch.nn.Module, needle: str) -> None:
    p = export(module, tmp_path / "m.onnx")
    assert_one_line_error(run("attack", p, "--data", data, "--device", "cpu"), needle)


def test_unsupported_operator_is_named(tmp_path: Path, data: Path) -> None:
    # A valid SR graph (Resize x2) followed by an op onnx2torch has no converter for.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["u"], mode="nearest"),
        helper.make_node("Hardmax", ["u"], ["y"], axis=1),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], initializer=[scales])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / "unsup.onnx"
    onnx.save(m, p)
    assert_one_line_error(run("attack", p, "--data", data, "--device", "cpu"), "Hardmax-13")
    r = run("inspect", p, "--device", "cpu")
    assert r.exit_code != 0 and "Hardmax-13" in r.output


def test_empty_data_folder(tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("attack", tiny, "--data", tmp_path / "empty", "--device", "cpu"), "no images")


def test_unreadable_image(tiny: Path, tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "set", n=1)
    (d / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert_one_line_error(run("attack", tiny, "--data", d, "--device", "cpu"), "broken.png")


def test_hr_lr_size_mismatch(tiny: Path, tmp_path: Path) -> None:
    d = make_dataset(tmp_path / "set", n=1, hw=(24, 20))
    (d / "LR_bicubic" / "X2").mkdir(parents=True)
    write_image(d / "LR_bicubic" / "X2" / "img0x2.png", np.zeros((7, 7, 3), np.float32))
    assert_one_line_error(run("attack", tiny, "--data", d, "--device", "cpu"), "img0")


@pytest.mark.parametrize("alpha", ["0", "-1/255", "1.5", "abc"])
def test_bad_budget(tiny: Path, data: Path, alpha: str) -> None:
    assert_one_line_error(run("attack", tiny, "--data", data, "--alpha", alpha), "budget")


def test_bad_steps(tiny: Path, data: Path) -> None:
    assert_one_line_error(run("attack", tiny, "--data", data, "--steps", "0"), "steps")


def test_reference_hr_on_lr_only_data(tiny: Path, tmp_path: Path) -> None:
    d = tmp_path / "lr" / "LR"
    d.mkdir(parents=True)
    write_image(d / "a.png", np.random.default_rng(1).random((10, 12, 3)).astype(np.float32))
    assert_one_line_error(run("attack", tiny, "--data", d.parent, "--reference", "hr", "--steps", "1",
                              "--device", "cpu"), "hr")
    r = run("attack", tiny, "--data", d.parent, "--steps", "2", "--alpha", "4/255",
            "--out", tmp_path / "o", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["config"]["reference"] == "clean-sr"


def test_mixed_precision_reports_its_difference_to_fp32(tiny: Path, data: Path, tmp_path: Path) -> None:
    r = run("attack", tiny, "--data", data, "--alpha", "8/255", "--steps", "3", "--precision", "bf16",
            "--out", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    pc = json.loads((tmp_path / "report.json").read_text())["precision_check"]
    assert pc["precision"] == "bf16" and len(pc["rows"]) == 2
    assert isinstance(pc["mean_abs_difference_db"], float) and "vs fp32" in r.output
    assert_one_line_error(run("attack", tiny, "--data", data, "--precision", "fp8"), "precision")


class WithAlpha(torch.nn.Module):
    """An SR model with a second, non-image input (as Real-CUGAN's alpha)."""

    def forward(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return up * alpha


def test_a_second_input_needs_a_value_and_gets_it(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "alpha.onnx"
    torch.onnx.export(WithAlpha(), (torch.rand(1, 3, 8, 8), torch.tensor(1.0)), str(path), dynamo=False,
                      opset_version=17, input_names=["lr", "alpha"], output_names=["sr"],
                      dynamic_axes={"lr": {0: "b", 2: "h", 3: "w"}, "sr": {0: "b", 2: "h", 3: "w"}})
    r = run("inspect", path, "--device", "cpu")
    assert r.exit_code == 1 and "'alpha' (float scalar)" in r.output and "--input-value alpha=VALUE" in r.output
    assert len(r.output.strip().splitlines()) == 1
    for bad, needle in (("beta=1", "no such input"), ("alpha=x", "not a number"), ("alpha", "NAME=VALUE")):
        r = run("inspect", path, "--input-value", bad, "--device", "cpu")
        assert r.exit_code == 1 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = run("evaluate", path, "--data", data, "--input-value", "alpha=0.9", "--out", tmp_path / "ev", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["model"]["input_values"] == {"alpha": "0.9"}
    # the value reached the model: SR = 0.9 x the nearest-neighbour upscale, as onnxruntime computes it
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 5, 4), dtype=np.float32)
    want = sess.run(None, {"lr": x, "alpha": np.array(0.9, np.float32)})[0]
    m = SRModel(path, device="cpu", inputs={"alpha": "0.9"})
    with torch.no_grad():
        got = m.torch()(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5
