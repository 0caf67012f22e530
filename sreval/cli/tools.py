"""The CLI's commands around the jobs: sweeps, reports, the regression check, the demo and the
model zoo. Their library modules are imported when the command runs (the CLI is the one place
where imports wait for their use: `--help` must not load torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

import sreval
from sreval.cli.base import (
    RUN, AlphaOpt, DataOpt, DataRoot, DeviceOpt, NormOpt, QuantOpt, RefOpt, SeedOpt, StepsOpt, budget,
    command, err, handle_errors, label, new_table, out, progress_bar, report_line,
)
from sreval.config import PAPER_ALPHAS, DemoConfig, parse_alpha
from sreval.errors import ConfigError
from sreval.manifest import manifest, weights_available
from sreval.registry import ATTACKS

def _fmt_db(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "inf" if v is None else str(v)


@command(RUN)
def sweep(
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated ONNX files or zoo names.", show_default=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="Comma-separated dataset names (Set5, Set14, BSD100: under --data-root), folders, or 'default'.")] = "Set5",
    attacks: Annotated[str, typer.Option("--attacks", help=f"Comma-separated, from the registry (sreval attacks): {', '.join(ATTACKS)}.")] = "basic",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    crop: Annotated[Optional[int], typer.Option("--crop", help="LR side of a centre crop of every image (HR cropped above it).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Use the first N images only.")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Budgets (universal: images) per forward/backward.")] = None,
    index_samples: Annotated[int, typer.Option("--index-samples", help="N_s of the robustness index (attack 'index', at the smallest budget).")] = 1024,
    defenses: Annotated[str, typer.Option("--defenses", help="Defenses of the attack 'defense'.")] = "resize,self-ensemble",
    keep_images: Annotated[int, typer.Option("--keep-images", help="Images per cell whose PNGs are kept for the report's figures.")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local, or ray (cluster at RAY_ADDRESS, else a local Ray; needs the ray extra).")] = "local",
    method: Annotated[str, typer.Option("--method", help="The gradient attack: ifgsm, pgd, apgd, mifgsm, or strongest (basic cells; the other attacks then use ifgsm).")] = "ifgsm",
    norm: NormOpt = "linf",
    effort: Annotated[str, typer.Option("--effort", help="--method strongest: quick, standard or thorough (see sreval attack --help).")] = "standard",
    data_root: DataRoot = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Run the grid models x datasets x attacks (all budgets per cell); finished cells are cached
    and an interrupted sweep resumes where it stopped."""
    with progress_bar("cells") as bar:
        report = sreval.sweep(models, data, attacks=attacks, alpha=alpha, steps=steps, reference=reference,
                              quantize=quantize, out=out_dir, crop=crop, limit=limit, batch=batch,
                              index_samples=index_samples, defenses=defenses, keep_images=keep_images,
                              executor=executor, method=method, norm=norm, effort=effort, data_root=data_root,
                              progress=bar,
                              **common)
    cells = report["sweep"]["cells"]
    done = [c.get("outcome") for c in cells]
    table = new_table(title=f"sweep: {len(cells)} cells ({done.count('done')} computed, {done.count('cached')} cached)")
    for col in ("attack", "model", "dataset", "status"):
        table.add_column(col)
    for c in cells:
        table.add_row(c["attack"], c["model"], c["dataset"], c.get("outcome") or c["status"])
    out.print(table)
    for note in report["sweep"].get("repaired", []):
        out.print(label("note:", "yellow", f"damaged cell {note}"), soft_wrap=True)
    report_line(out_dir)
    out.print(f"render it: sreval report {out_dir}", soft_wrap=True)


@command(run_folder=False)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A sweep folder or any job's output folder.", show_default=False)],
    html: Annotated[Optional[Path], typer.Option("--html", help="HTML file to write (default RUN_DIR/report.html).")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Markdown file (default RUN_DIR/report.md).")] = None,
) -> None:
    """Render a run as one self-contained HTML file (the paper's figures) and a Markdown summary."""
    from sreval.htmlreport import render_report

    rendered = render_report(run_dir, html_path=html, markdown_path=markdown)
    say = err if "-" in (str(html), str(markdown)) else out  # standard output holds the report itself
    say.print(f"sections: {', '.join(rendered.sections)}")
    say.print(f"html: {rendered.html}", soft_wrap=True)
    say.print(f"markdown: {rendered.markdown}", soft_wrap=True)


@command(run_folder=False)
def check(
    run_dir: Annotated[Path, typer.Argument(help="A sweep folder or any job's output folder.", show_default=False)],
    golden: Annotated[Path, typer.Option("--golden", help="Golden file (JSON, schema sreval.golden/1).", show_default=False)],
    tol: Annotated[float, typer.Option("--tol", help="Allowed |difference| of a PSNR in dB (other numbers: the same as a power ratio).")] = 0.1,
    update: Annotated[bool, typer.Option("--update", help="Write the golden file from this run instead of checking.")] = False,
) -> None:
    """Compare every number of a run with a golden file; exit 1 listing each regression."""
    from sreval.check import check_run, summary_line, write_golden

    if update:
        g = write_golden(run_dir, golden)
        out.print(f"golden file written: {golden} ({len(g['cells'])} cells, "
                  f"{sum(len(v) for r in g['cells'].values() for v in r.values())} numbers)", soft_wrap=True)
        return
    result = check_run(run_dir, golden, tol=tol)
    for r in result.regressions:  # one line each (cell / row / metric: expected, got): greppable in CI logs
        out.print(f"regression: {r.line()}", soft_wrap=True)
    for note in result.notes:
        out.print(f"note: {note}", soft_wrap=True)
    for n in result.new:
        out.print(f"new (not in the golden file): {n}", soft_wrap=True)
    if not result.ok:
        err.print(label("error:", "red", summary_line(result)), soft_wrap=True)
        raise typer.Exit(1)
    out.print(summary_line(result))


@command()
def demo(
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated zoo names or ONNX files.")] = ",".join(DemoConfig.models),
    limit: Annotated[int, typer.Option("--limit", min=1, help="Embedded photos used.")] = DemoConfig.limit,
    crop: Annotated[int, typer.Option("--crop", min=1, help="LR side of the centre crop of each photo.")] = DemoConfig.crop,
    steps: StepsOpt = DemoConfig.steps,
    alpha: AlphaOpt = ",".join(budget(a) for a in DemoConfig.alphas),
    device: DeviceOpt = "auto",
    seed: SeedOpt = DemoConfig.seed,
    *, out_dir: Path,
) -> None:
    """The main job, offline: build the zoo models a fresh machine can build, attack the embedded
    photos at a few budgets, render the HTML report, print a short table."""
    from sreval.demo import run_demo

    cfg = DemoConfig(models=tuple(m.strip() for m in models.split(",") if m.strip()), limit=limit, crop=crop,
                     steps=steps, alphas=tuple(parse_alpha(alpha)), seed=seed)
    with progress_bar("demo") as bar:
        result = run_demo(cfg, out_dir, device=device, progress=bar)
    table = new_table(title=f"basic attack, {limit} embedded photo(s), {crop}x{crop} LR crops, T = {steps}")
    table.add_column("model", no_wrap=True)
    for col in ("alpha", "LR PSNR", "SR PSNR", "SR vs HR", "clean SR vs HR"):
        table.add_column(col, justify="right")
    for r in result.table:
        table.add_row(str(r["model"]), budget(r["alpha"]), _fmt_db(r["psnr_lr"]), _fmt_db(r["psnr_sr"]),
                      _fmt_db(r["psnr_hr"]), _fmt_db(r["clean_psnr"]))
    out.print(table)
    out.print("PSNR in dB (Y channel); LR/SR PSNR: attacked vs clean, lower = more damage")
    for f in result.findings:
        if f.verdict != "not tested":
            out.print(f"finding: {f.claim}: {f.verdict}", soft_wrap=True)
    out.print(f"report: {result.html}", soft_wrap=True)


# ----------------------------------------------------------------------------- zoo

zoo_app = typer.Typer(help="The model zoo: list, build, verify, Table 1.", no_args_is_help=True, rich_markup_mode=None)


@zoo_app.command("list")
@handle_errors
def zoo_list() -> None:
    """Every manifest entry: built or not, weights available or not, Table 1 facts."""
    table = new_table(title="sreval model zoo")
    for col in ("name", "arch", "scale", "built", "weights", "Table 1 (params / conv / GAN)", "weights source"):
        table.add_column(col)
    for e in manifest().values():
        t1 = e.table1
        facts = f"{t1['params']} / {t1['conv_layers']} / {'yes' if t1['gan'] else 'no'}" if t1 else "-"
        table.add_row(e.name, e.arch, f"x{e.scale}", "yes" if e.built else "no",
                      "yes" if weights_available(e) else "no", facts, e.weights.describe())
    out.print(table)


@zoo_app.command("build")
@handle_errors
def zoo_build(
    names: Annotated[list[str], typer.Argument(help="Zoo names ('all': every entry whose weights are here).")],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Local checkpoint (one NAME only), checked against the manifest's SHA-256.")] = None,
    other_weights: Annotated[bool, typer.Option("--other-weights", help="Build from a --weights file that is not the official checkpoint; the model is then named NAME@<digest>, never NAME.")] = False,
) -> None:
    """Export zoo entries to canonical ONNX files (parity-checked against onnxruntime)."""
    from sreval import zoo

    if names == ["all"]:
        names = [n for n, e in zoo.manifest().items() if zoo.weights_available(e)]
    if weights is not None and len(names) != 1:
        raise ConfigError("--weights goes with exactly one NAME")
    for name in names:
        out.print(f"{name}: {zoo.build(name, weights=weights, other_weights=other_weights)}")


@zoo_app.command("verify")
@handle_errors
def zoo_verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="Zoo names (default: every built one).")] = None,
    data: DataOpt = "Set5",
    data_root: DataRoot = None,
    tol: Annotated[float, typer.Option("--tol", help="Allowed |PSNR - manifest| in dB.")] = 0.05,
    device: DeviceOpt = "cpu",
) -> None:
    """Parity and clean PSNR of built models against the manifest; exit 1 on any regression."""
    from sreval import zoo

    verdicts = zoo.verify(names, data, tol=tol, data_root=data_root, device=device)
    table = new_table(title=f"zoo verify on {data} (tolerance {tol} dB)")
    for col in ("name", "PSNR (Y)", "expected", "parity", "status"):
        table.add_column(col)
    for v in verdicts:
        table.add_row(v.name, f"{v.psnr:.3f}" if v.psnr is not None else "-",
                      f"{v.expected:.3f}" if v.expected is not None else "-",
                      f"{v.parity:.1e}" if v.parity is not None else "-",
                      label(v.status, "red" if v.failed else "green", v.message))
    out.print(table)
    if not verdicts or any(v.failed for v in verdicts):
        err.print(label("error:", "red", "no built models to verify" if not verdicts else
                        "regressions: " + ", ".join(v.name for v in verdicts if v.failed)))
        raise typer.Exit(1)


@zoo_app.command("table")
@handle_errors
def zoo_table(
    names: Annotated[Optional[list[str]], typer.Argument(help="Zoo names (default: the paper's models).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Table 1 of the paper, computed from each exported ONNX graph."""
    from sreval import zoo

    rows = zoo.table(names)
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in rows]))
        return
    table = new_table(title="Table 1: parameters and convolutional layers (x4 graph)")
    for col in ("name", "params", "x4-graph params", "checkpoint params", "conv layers", "GAN", "paper", "match"):
        table.add_column(col)
    for r in rows:
        paper = f"{r.paper_params} / {r.paper_conv_layers}" if r.paper_params else "-"
        match = {True: Text("yes", "green"), False: Text("NO", "red"), None: "-"}[r.matches_paper]
        table.add_row(r.name, r.params_m, f"{r.params:,}", f"{r.params_checkpoint:,}" if r.params_checkpoint else "-",
                      str(r.conv_layers), "yes" if r.gan_trained else "no", paper, match)
    out.print(table)
