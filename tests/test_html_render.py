"""`sreval report`: sections from whatever a run holds (and none drawn empty), a self-contained
HTML file, the Markdown summary, the CLI, and the page opened in a real headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from html import escape

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sreval.cli import app
from sreval.findings import CHECKS, findings
from sreval.htmlreport import render_report
from sreval.runview import load_run
from sreval.io import write_image
from sreval.sweeps import SweepConfig, run_sweep
from tests.tiny import TinySR, export

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
ALL_BUT_TARGETED = ("clean", "basic", "universal", "partial", "transfer", "index", "defense")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(2)
    for i in range(3):
        write_image(root / "set" / "HR" / f"img{i}.png", rng.random((24, 24, 3)).astype(np.float32))
    return {"a": export(TinySR(scale=2, seed=0), root / "a.onnx"), "b": export(TinySR(scale=2, seed=3, feats=16), root / "b.onnx"),
            "data": root / "set", "root": root}


def sweep(world: dict[str, Path], out: Path, attacks: tuple[str, ...], **kw: object) -> Path:
    cfg = SweepConfig(models=(str(world["a"]), str(world["b"])), datasets=(str(world["data"]),), attacks=attacks,
                      alphas=(2 / 255, 8 / 255), steps=2, crop=8, index_samples=4, **kw)  # type: ignore[arg-type]
    run_sweep(cfg, out, device="cpu")
    return out


@pytest.fixture(scope="module")
def full_run(world: dict[str, Path]) -> Path:
    return sweep(world, world["root"] / "full", ALL_BUT_TARGETED)


def images_in(html: str) -> list[np.ndarray]:
    out = []
    for b64 in DATA_URI.findall(html):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.std() > 3
        out.append(img)
    return out


@pytest.mark.slow
def test_full_run_every_section(full_run: Path) -> None:
    r = render_report(full_run)
    assert r.sections == ["overview", "findings", "clean", "fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8",
                          "fig10", "defense", "evidence", "conventions"]
    html = r.html.read_text()
    # 9 figures; fig7 also has the permeation profile; the evidence section its loss curves
    assert len(images_in(html)) == r.figures == 11
    assert "Attack evidence (sanity checks)" in html and "loss_rises" in html
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    for needle in ("Fig. 4 - transferability", "basic+resize-adaptive", "Y channel of MATLAB rgb2ycbcr", "shave_sr"):
        assert needle in html
    items = findings(load_run(full_run))
    assert len(items) == len(CHECKS)
    for f in items:  # every claim is in the report; this run has each attack, so each one is tested
        assert escape(f.claim) in html and escape(f.evidence) in html
        # two models, no bicubic, no GAN-trained one: the size, GAN and bicubic claims need more;
        # 8-pixel crops leave the partial attack one ring to measure decay on
        needs_more = any(w in f.claim for w in ("GAN", "Bicubic", "model size", "partial"))
        assert f.verdict != "not tested" or needs_more, f
    md = r.markdown.read_text()
    assert md.startswith("# sreval report") and "| model |" in md
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (r.markdown.parent / link).is_file()


def test_missing_data_means_missing_sections(world: dict[str, Path], tmp_path: Path) -> None:
    run = sweep(world, tmp_path / "basic", ("basic",), keep_images=0)
    r = render_report(run)
    assert r.sections == ["overview", "findings", "fig1", "fig3", "evidence", "conventions"], "no images kept: no Fig. 2"
    html = r.html.read_text()
    for absent in ("Fig. 2", "Fig. 4", "Fig. 5", "Fig. 7", "Fig. 9", "Fig. 10", "Defenses"):
        assert f"<h2>{absent}" not in html


@pytest.mark.slow
def test_interrupted_sweep_renders_what_is_done(world: dict[str, Path], full_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "partial"
    shutil.copytree(full_run, run)
    (run / "report.json").unlink()
    for cell in list((run / "cells").iterdir()):
        if cell.name.startswith("transfer"):
            shutil.rmtree(cell)
    r = render_report(run)
    assert "fig4" not in r.sections and "fig1" in r.sections
    assert "Not finished (left out below): transfer / a, b / set" in r.html.read_text()


def test_single_job_folder(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "attack"
    res = runner.invoke(app, ["attack", str(world["a"]), "--data", str(world["data"]), "--alpha", "2/255,8/255",
                              "--steps", "1", "--out", str(out), "--device", "cpu", "--save-images"])
    assert res.exit_code == 0, res.output
    view = load_run(out)
    assert [c.attack for c in view.cells] == ["basic"] and view.models[0]["name"] == "a"
    r = render_report(out)
    assert r.sections[:4] == ["overview", "findings", "fig1", "fig2"]


@pytest.mark.slow
def test_cli_report(full_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(full_run), "--html", str(tmp_path / "r.html"), "--markdown", str(tmp_path / "r.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").is_file() and (tmp_path / "figures").is_dir() and "fig10" in res.output


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "no run folder"),
    (lambda p: p.mkdir(), "no report"),
    (lambda p: (p.mkdir(), (p / "report.json").write_text("{oops")), "not a readable report"),
])
def test_cli_report_bad_input(tmp_path: Path, make: object, needle: str) -> None:
    target = tmp_path / "run"
    make(target)  # type: ignore[operator]
    res = runner.invoke(app, ["report", str(target)])
    assert res.exit_code == 1 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_targeted_section(world: dict[str, Path], assets: Path, tmp_path: Path) -> None:
    run = sweep(world, tmp_path / "t", ("targeted",))
    r = render_report(run)
    assert "fig9" in r.sections and "evidence" in r.sections
    html = r.html.read_text()
    # Fig. 9, and the evidence section's loss curves (the targeted loss must fall)
    assert "closer to target" in html and len(images_in(html)) == 2
    assert "the loss fell from the start in every attack" in html


# ----------------------------------------------------------------------------- a real browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    message = "no Chromium on PATH (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def browse(html: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([chromium(), *flags, *args, html.resolve().as_uri()], capture_output=True, text=True,
                          timeout=180, check=False)


# Added to a copy of the page: after load, record each image's decoded width in the DOM.
PROBE = ("<script>window.addEventListener('load', () => {document.body.setAttribute('data-widths', "
         "Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1).join(','));});</script>")


@pytest.mark.slow
def test_chromium_renders_the_report(full_run: Path, tmp_path: Path) -> None:
    chromium()
    r = render_report(full_run)
    probe = tmp_path / "probe.html"
    probe.write_text(r.html.read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(probe, tmp_path, "--virtual-time-budget=10000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    widths = re.search(r'data-widths="([^"]*)"', dom.stdout)
    assert widths, dom.stdout[:500]
    decoded = [int(w) for w in widths.group(1).split(",")]
    assert len(decoded) == r.figures and all(w > 100 for w in decoded), decoded
    for title in ("Fig. 1 - basic attack", "Fig. 10 - robustness index", "Conventions"):
        assert title in dom.stdout
    shot = tmp_path / "shot.png"
    res = browse(r.html, tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", "--hide-scrollbars")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 20 and (img < 128).mean() > 0.01, "the page is blank"
