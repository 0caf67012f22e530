"""`sreval demo`: the main job with no download and no shared assets, made small for the test
(the real demo's defaults are timed by hand; see README)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sreval.cli import app
from sreval import zoo
from sreval.config import DemoConfig
from sreval.demo import DEMO_MODELS, summary_table
from sreval.errors import ConfigError

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def no_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ../shared: the assets and data roots point nowhere."""
    monkeypatch.setenv("SREVAL_ASSETS", str(tmp_path / "no-shared-assets"))
    monkeypatch.delenv("SREVAL_DATA", raising=False)


def test_demo_offline(no_shared: None, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--models", "bicubic,realesr-animevideov3-x4", "--limit", "1",
            "--crop", "12", "--steps", "2", "--alpha", "2/255,8/255", "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = r.output
    assert "bicubic" in text and "realesr-animevideov3-x4" in text and "8/255" in text
    assert text.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    assert "finding: Bicubic interpolation is the most robust:" in text
    html = (out / "report.html").read_text()
    assert "Fig. 1 - basic attack" in html and "Fig. 2 - clean and attacked images" in html
    assert "Findings - the paper" in html and "GAN-trained models are the most vulnerable" in html
    assert "astronaut" in html, "the embedded photos"
    # a second run reuses the cached cells
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output


def test_demo_bad_input(no_shared: None, tmp_path: Path) -> None:
    for args, needle in ((["--models", "no-such-model"], "no-such-model"), (["--alpha", "0"], "budget")):
        r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--steps", "1", *args])
        assert r.exit_code == 1 and needle in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    with pytest.raises(ConfigError, match="crop"):
        DemoConfig(crop=0)


def test_summary_table() -> None:
    report = {"summary": [{"attack": "none", "alpha": 0.0, "model": "m", "psnr_sr": 30.0},
                          {"attack": "basic", "alpha": 8 / 255, "model": "m", "psnr_lr": 40.0, "psnr_sr": 20.0, "psnr_hr": 19.0}]}
    assert summary_table(report) == [{"model": "m", "alpha": 8 / 255, "psnr_lr": 40.0, "psnr_sr": 20.0,
                                      "psnr_hr": 19.0, "clean_psnr": 30.0}]


def test_default_demo_shows_the_central_finding() -> None:
    """bicubic against a PSNR-oriented and a GAN-trained real model, all buildable offline."""
    entries = zoo.manifest()
    assert sorted(entries[m].objective for m in DEMO_MODELS) == ["GAN", "PSNR", "none"]
    assert all(entries[m].weights.kind in ("none", "ncnn") for m in DEMO_MODELS)
    assert all(entries[m].scale == 4 for m in DEMO_MODELS)
