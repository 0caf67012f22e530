"""The basic attack end to end on real weights: CARN-M (a paper model) on two Set5 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sreval.cli import app
from sreval.data import assets_dir

pytestmark = pytest.mark.slow  # real exports / real weights / a fresh venv: not in the fast lane


@pytest.fixture(scope="module")
def carn_m_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sreval import exporters
    from sreval.exporters.common import export_onnx, load_weights, read_checkpoint

    weights = assets_dir() / "weights" / "carn_m" / "carn_m.pth"
    if not weights.is_file():
        pytest.fail(f"missing asset {weights}") if _ci() else pytest.skip(f"missing asset {weights}")
    spec = exporters.ARCHS["carn_m"]
    net = spec.build(4)
    load_weights(net, spec, read_checkpoint(weights), str(weights))
    return export_onnx(net, spec, tmp_path_factory.mktemp("m") / "carn-m.onnx", scale=4,
                       metadata={"sreval.name": "carn-m"})


def _ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() == "true"


def test_carn_m_basic_attack_on_two_set5_images(carn_m_onnx: Path, assets: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "attack", str(carn_m_onnx), "--data", str(assets / "datasets" / "Set5"), "--limit", "2",
        "--alpha", "2/255,8/255", "--steps", "5", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["model"]["scale"] == 4 and rep["config"]["reference"] == "hr"
    rows = {(row["image"], row["alpha"]): row for row in rep["results"]}
    assert {img for img, _ in rows} == {"baby", "bird"}
    for img in ("baby", "bird"):
        weak, strong = rows[(img, 2 / 255)], rows[(img, 8 / 255)]
        # the SR output degrades far more than the LR input, and more with a larger budget
        assert strong["psnr_sr"] < weak["psnr_sr"] - 3
        assert strong["psnr_lr"] < weak["psnr_lr"]
        assert strong["psnr_sr"] < strong["psnr_lr"] - 5
        # an 8/255 l_inf budget delivered as 8-bit values keeps the LR PSNR above ~34 dB
        assert 34 < strong["psnr_lr"] < 48
        assert strong["psnr_hr"] < weak["psnr_hr"]
