"""The paper commands through typer's CliRunner: universal, partial, targeted, transfer, index,
--defense on attack/evaluate; reports in the one schema, and every bad input as one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sreval.cli import app
from sreval.io import write_image
from tests.tiny import TinySR, export

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"a": export(TinySR(scale=2), d / "tiny_a.onnx"),
            "b": export(TinySR(scale=2, seed=1), d / "tiny_b.onnx"),
            "x4": export(TinySR(scale=4), d / "tiny_x4.onnx")}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "set"
    (root / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(24, 20), (20, 28), (22, 22)]):
        write_image(root / "HR" / f"img{i}.png", rng.random((h, w, 3)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(1)
    base = rng.random((20, 24, 3)).astype(np.float32)
    other = base.copy()
    other[6:12, 8:16] = 1 - other[6:12, 8:16]  # the "eyes" change between frames
    paths = {"src": d / "f0.png", "tgt": d / "f1.png", "big": d / "big.png"}
    write_image(paths["src"], base)
    write_image(paths["tgt"], other)
    write_image(paths["big"], rng.random((28, 24, 3)).astype(np.float32))
    return paths


def run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: Any) -> dict[str, Any]:
    r = run(*args, "--device", "cpu")
    assert r.exit_code == 0, r.output
    out = Path(args[args.index("--out") + 1])
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "sreval.report/2" and (out / "results.csv").exists()
    return rep


def one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n.lower() in text.lower(), text


# ----------------------------------------------------------------------------- happy paths


def test_universal_saves_perturbation_and_holdout_rows(models: dict, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "u"
    rep = ok("universal", models["a"], "--data", data, "--alpha", "4/255,8/255", "--steps", "2",
             "--holdout", "0.34", "--crop", "8", "--out", out, "--save-images")
    assert rep["command"] == "universal" and rep["config"]["crop"] == 8
    assert {r["attack"] for r in rep["results"]} == {"universal"} and len(rep["results"]) == 6
    assert {s["group"] for s in rep["summary"]} == {"fit", "holdout"}
    sec = rep["universal"]
    assert len(sec["holdout"]) == 1 and len(sec["fit"]) == 2
    for p in sec["perturbations"]:
        delta = np.load(out / p["npy"])
        assert delta.shape == (8, 8, 3) and np.abs(delta).max() <= p["alpha"] + 1e-6
        assert (out / p["png"]).exists()
    assert (out / "images").is_dir()


def test_universal_default_crop_is_largest_common_square(models: dict, data: Path, tmp_path: Path) -> None:
    rep = ok("universal", models["a"], "--data", data, "--alpha", "8/255", "--steps", "1", "--out", tmp_path)
    assert rep["universal"]["crop"] == 10  # LR sizes 12x10, 10x14, 11x11
    assert rep["universal"]["holdout"] == []


def test_partial_reports_permeation(models: dict, data: Path, tmp_path: Path) -> None:
    rep = ok("partial", models["a"], "--data", data, "--alpha", "8/255", "--steps", "2", "--limit", "2",
             "--out", tmp_path)
    assert {r["attack"] for r in rep["results"]} == {"partial"}
    row = rep["results"][0]
    assert row["psnr_sr"] > row["psnr_sr_inside"] and row["permeation"]["distance_lr"][0] == 1
    (prof,) = rep["permeation"]
    assert prof["alpha"] == pytest.approx(8 / 255) and len(prof["mse_y"]) == len(prof["distance_lr"])
    header = next(csv.reader((tmp_path / "results.csv").open()))
    assert "psnr_sr_inside" in header and "permeation" not in header


def test_targeted_reports_four_psnrs(models: dict, frames: dict, tmp_path: Path) -> None:
    rep = ok("targeted", models["a"], "--source", frames["src"], "--target", frames["tgt"],
             "--alpha", "8/255,16/255", "--steps", "3", "--out", tmp_path)
    assert [r["attack"] for r in rep["results"]] == ["targeted", "targeted"]
    clean = rep["targeted"]["clean"]
    for r in rep["results"]:
        for k in ("psnr_target_hr", "psnr_source_hr", "psnr_lr", "psnr_lr_target"):
            assert isinstance(r[k], float)
    assert rep["results"][1]["psnr_target_hr"] > clean["psnr_target_hr"]


def test_targeted_defaults_to_the_foreman_frames(models: dict, assets: Path, tmp_path: Path) -> None:
    rep = ok("targeted", models["x4"], "--steps", "1", "--out", tmp_path)
    assert rep["targeted"]["source"] == "foreman_cif_frame000" and rep["data"]["hr_size"] == [288, 352]


def test_transfer_matrix(models: dict, data: Path, tmp_path: Path) -> None:
    rep = ok("transfer", models["a"], models["b"], "--data", data, "--steps", "2", "--limit", "2",
             "--out", tmp_path)
    assert rep["transfer"]["models"] == ["tiny_a", "tiny_b"]
    (block,) = rep["transfer"]["matrix"]
    assert block["alpha"] == pytest.approx(8 / 255)
    assert len(block["psnr_sr"]) == 2 and all(isinstance(v, float) for row in block["psnr_sr"] for v in row)
    lines = list(csv.reader((tmp_path / "transfer_matrix.csv").open(), quoting=csv.QUOTE_NONNUMERIC))
    assert lines[0] == ["alpha", "source", "tiny_a", "tiny_b"] and len(lines) == 3
    assert len(rep["results"]) == 2 * 2 * 2


def test_index_runs_attack_or_reads_report(models: dict, data: Path, tmp_path: Path) -> None:
    rep = ok("index", models["a"], "--data", data, "--samples", "4", "--batch", "3", "--steps", "2",
             "--out", tmp_path / "i")
    sec = rep["robustness_index"]
    assert sec["samples"] == 4 and sec["n"] == 3 and sec["pearson"] is not None
    idx_rows = [r for r in rep["results"] if r["attack"] == "index"]
    assert len(idx_rows) == 3 and all(r["robustness_index"] > 0 for r in idx_rows)
    assert len([r for r in rep["results"] if r["attack"] == "basic"]) == 3
    ok("attack", models["a"], "--data", data, "--alpha", "1/255", "--steps", "2", "--out", tmp_path / "att")
    rep2 = ok("index", models["a"], "--data", data, "--samples", "4", "--attack-report", tmp_path / "att",
              "--out", tmp_path / "i2")
    assert rep2["robustness_index"]["psnr_sr_from"] == str(tmp_path / "att")
    assert {r["attack"] for r in rep2["results"]} == {"index"}


def test_attack_and_evaluate_with_defenses(models: dict, data: Path, tmp_path: Path) -> None:
    rep = ok("attack", models["a"], "--data", data, "--alpha", "8/255", "--steps", "2", "--limit", "1",
             "--defense", "resize", "--defense", "self-ensemble", "--out", tmp_path / "a")
    assert {s["attack"] for s in rep["summary"]} == {
        "basic", "basic+resize", "basic+resize-adaptive", "basic+self-ensemble", "basic+self-ensemble-adaptive"}
    assert rep["defense"]["defenses"] == ["resize", "self-ensemble"]
    rep = ok("evaluate", models["a"], "--data", data, "--limit", "1", "--defense", "resize", "--out", tmp_path / "e")
    assert [r["attack"] for r in rep["results"]] == ["none", "none+resize"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cmd", ["universal", "partial", "index"])
@pytest.mark.parametrize("alpha", ["0", "-1/255", "1.5", "abc"])
def test_bad_budgets(models: dict, data: Path, cmd: str, alpha: str) -> None:
    one_line_error(run(cmd, models["a"], "--data", data, "--alpha", alpha), "budget")


@pytest.mark.parametrize("args,needle", [
    (["--crop", "11"], "larger than image img"),
    (["--crop", "0"], "crop"),
    (["--holdout", "0"], "holdout"),
    (["--holdout", "1"], "holdout"),
    (["--holdout", "1.5"], "holdout"),
    (["--holdout", "0.1"], "no image to hold out"),
    (["--steps", "0"], "steps"),
    (["--batch", "0"], "batch"),
])
def test_universal_bad_input(models: dict, data: Path, tmp_path: Path, args: list, needle: str) -> None:
    one_line_error(run("universal", models["a"], "--data", data, "--steps", "1", *args, "--out", tmp_path,
                       "--device", "cpu"), needle)


def test_targeted_bad_input(models: dict, frames: dict, tmp_path: Path) -> None:
    base = ("targeted", models["a"], "--steps", "1", "--out", tmp_path, "--device", "cpu")
    one_line_error(run(*base, "--source", frames["src"], "--target", tmp_path / "none.png"), "target image not found")
    one_line_error(run(*base, "--source", tmp_path / "none.png", "--target", frames["tgt"]), "source image not found")
    one_line_error(run(*base, "--source", frames["src"], "--target", frames["big"]), "target HR is 24x28")
    one_line_error(run(*base, "--source", frames["src"], "--target", frames["tgt"], "--alpha", "2"), "budget")


def test_transfer_bad_input(models: dict, data: Path, tmp_path: Path) -> None:
    one_line_error(run("transfer", models["a"], models["x4"], "--data", data, "--out", tmp_path,
                       "--device", "cpu"), "one scale", "x2", "x4")
    one_line_error(run("transfer", models["a"], "--data", data, "--out", tmp_path), "at least two models")
    one_line_error(run("transfer", models["a"], models["b"], "--alpha", "x", "--data", data), "budget")
    one_line_error(run("transfer", models["a"], tmp_path / "none.onnx", "--data", data, "--device", "cpu"), "not found")


def test_index_bad_input(models: dict, data: Path, tmp_path: Path) -> None:
    base = ("index", models["a"], "--data", data, "--out", tmp_path / "o", "--device", "cpu")
    one_line_error(run(*base, "--samples", "0"), "samples")
    one_line_error(run(*base, "--batch", "0"), "batch")
    one_line_error(run(*base, "--alpha", "1/255,2/255"), "one budget")
    one_line_error(run(*base, "--attack-report", tmp_path / "nothing"), "no report")
    ok("attack", models["b"], "--data", data, "--alpha", "1/255", "--steps", "1", "--out", tmp_path / "b")
    one_line_error(run(*base, "--samples", "2", "--attack-report", tmp_path / "b"), "another model")
    ok("attack", models["a"], "--data", data, "--alpha", "2/255", "--steps", "1", "--out", tmp_path / "a2")
    one_line_error(run(*base, "--samples", "2", "--attack-report", tmp_path / "a2"), "no basic-attack row")


def test_unknown_defense(models: dict, data: Path, tmp_path: Path) -> None:
    one_line_error(run("attack", models["a"], "--data", data, "--defense", "jpeg", "--out", tmp_path), "unknown defense")
    one_line_error(run("evaluate", models["a"], "--data", data, "--defense", "jpeg", "--out", tmp_path), "unknown defense")
