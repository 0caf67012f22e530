"""The CLI's job commands: each parses its own options (the shared ones come from option groups),
calls one library function, and prints. The library is imported when a command runs
(`sreval.<function>` resolves on first use), so `--help` stays instant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

import sreval
from sreval.cli.base import (
    CONVENTIONS, DATA, IMAGES, LOOP, LOOP_NO_METHOD, RUN, AlphaOpt, BatchOpt, DataOpt, DeviceOpt, ModelArg, budget,
    command, fmt, gradient, label, loop_options, new_table, out, print_evidence, print_summary,
    progress_bar, report_line,
)
from sreval.config import EFFORTS, PAPER_ALPHAS, LoopOptions
from sreval.conventions import Overrides
from sreval.errors import ConfigError
from sreval.registry import ATTACKS

EFFORT_HELP = ("--method strongest: how its APGD/PGD members converge per image and budget: " + "; ".join(
    f"{name}: {e.restarts} random start{'s' if e.restarts > 1 else ''}, {e.first} iterations doubled while the SR PSNR "
    f"falls by more than {e.threshold_db:g} dB, at most {e.cap} ({e.passes()} passes per member)"
    for name, e in EFFORTS.items()) + ".")
ALL = (DATA, RUN, CONVENTIONS)  # what a job over a dataset takes besides its own options


@command(gradient(PAPER_ALPHAS), IMAGES, *ALL, LOOP_NO_METHOD)
def attack(
    model: ModelArg,
    data: DataOpt = "default",
    batch: BatchOpt = None,
    defense: Annotated[Optional[list[str]], typer.Option("--defense", help="resize or self-ensemble (repeatable): adds rows basic+D (bare attack through D) and basic+D-adaptive (attack through D).")] = None,
    method: Annotated[str, typer.Option("--method", help="ifgsm (the paper's I-FGSM), pgd, apgd, mifgsm, strongest (per image and budget the worst case over --ensemble), square (gradient-free, onnxruntime only, weaker) or auto (square where onnx2torch cannot convert the model).")] = "ifgsm",
    ensemble: Annotated[Optional[str], typer.Option("--ensemble", help="Members of --method strongest: METHOD, METHOD@REFERENCE or shift (default ifgsm,apgd@clean-sr,apgd@psnr-sr,shift: the paper's I-FGSM, APGD on eq. 1 and on the SR PSNR's own error (Y, shaved, 8-bit), and X0 +- alpha everywhere, the worst case of a linear model). APGD and PGD members run to convergence (--effort).")] = None,
    effort: Annotated[str, typer.Option("--effort", help=EFFORT_HELP)] = "standard",
    sanity: Annotated[bool, typer.Option("--sanity/--no-sanity", help="Run the sanity checks (two short probe attacks on the first image); failures are warnings and flags in report.json.")] = True,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Square attack: model runs per image.")] = 500,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16/fp16 mixed precision for the attack's forward/backward (the report states the PSNR difference to fp32).")] = "fp32",
    *, loop: LoopOptions, out_dir: Path, **common: Any,
) -> None:
    """Basic attack (I-FGSM, paper eq. 1-3): LR and SR PSNR per image and budget."""
    with progress_bar("attacking") as bar:
        report = sreval.attack(
            model, data, out=out_dir, batch=batch, progress=bar, method=method,
            loop=loop_options(method, loop, ensemble, effort), queries=queries, precision=precision, sanity=sanity,
            defense=defense, **common)
    print_summary(report, ("psnr_lr", "psnr_sr", "psnr_hr"))
    print_evidence(report)
    if report["config"].get("note"):
        out.print(label("note:", "yellow", report["config"]["note"]))
    if report.get("precision_check"):
        pc = report["precision_check"]
        out.print(f"{pc['precision']} vs fp32 on {', '.join(pc['images'])}: mean |SR PSNR difference| "
                  f"{pc['mean_abs_difference_db']:.3f} dB")
    report_line(out_dir)


@command(IMAGES, *ALL)
def evaluate(
    model: ModelArg,
    data: DataOpt = "default",
    defense: Annotated[Optional[list[str]], typer.Option("--defense", help="resize or self-ensemble (repeatable): adds clean rows none+D through the defense.")] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="auto (PyTorch conversion, onnxruntime where it cannot convert), torch or onnxruntime (no conversion).")] = "auto",
    *, out_dir: Path, **common: Any,
) -> None:
    """Clean SR quality against HR: PSNR (Y and RGB) and SSIM per image."""
    with progress_bar("evaluating") as bar:
        report = sreval.evaluate(model, data, out=out_dir, progress=bar, runtime=runtime,
                                 defense=defense, **common)
    print_summary(report, ("psnr_sr", "psnr_sr_rgb", "ssim_sr"))
    if report["config"].get("runtime") == "onnxruntime" and runtime == "auto":
        out.print(label("note:", "yellow", "onnx2torch cannot convert this model: evaluated with onnxruntime "
                                           "(no parity check possible)"))
    report_line(out_dir)


@command(CONVENTIONS, run_folder=False)
def inspect(model: ModelArg, device: DeviceOpt = "auto", *, conventions: Overrides) -> None:
    """Show the detected conventions, scale, opset, parity and unsupported operators."""
    info = sreval.inspect(model, device=device, conventions=conventions)
    table = new_table(show_header=False, title=f"sreval inspect: {info['path']}")
    for k, v in info.items():
        table.add_row(k, v if isinstance(v, str) else repr(v))
    out.print(table)
    if info.get("unsupported_ops") or info.get("conversion"):
        raise typer.Exit(1)


@command(run_folder=False)
def export(
    model: Annotated[str, typer.Argument(help="A PyTorch checkpoint: .pth, .pt, .ckpt or .safetensors.", show_default=False)],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The ONNX file to write.", show_default=False)],
    device: DeviceOpt = "auto",
) -> None:
    """Export a checkpoint (architecture recognised by spandrel) to a verified ONNX file."""
    info = sreval.export(model, out_file, device=device)
    size = f", fixed input {info['fixed_size']}x{info['fixed_size']} (tiled)" if info["fixed_size"] else ""
    out.print(f"{info['checkpoint']}: {info['architecture']} x{info['scale']}, exported with {info['exporter']}{size}; "
              f"max |onnxruntime - PyTorch| = {info['max_diff']:.2g}", soft_wrap=True)
    for why in info["tried"]:
        out.print(label("note:", "yellow", f"exporter failed first: {why}"), soft_wrap=True)
    cp = info["conversion_parity"]
    if not cp["ok"]:
        why = cp.get("error") or f"differs by {cp['max_diff']:.3g} (tolerance {cp['tol']:g})"
        out.print(label("warning:", "yellow", f"sreval's PyTorch conversion of the file: {why}; gradient attacks "
                        f"need it (evaluate and --method square work without)"), soft_wrap=True)
    out.print(f"written: {info['path']}", soft_wrap=True)


# ----------------------------------------------------------------------------- the rest of the paper


@command(gradient(PAPER_ALPHAS), IMAGES, *ALL, LOOP)
def universal(
    model: ModelArg,
    data: DataOpt = "default",
    crop: Annotated[Optional[int], typer.Option("--crop", help="LR side of the square centre crop (default: the largest fitting every image).")] = None,
    holdout: Annotated[Optional[float], typer.Option("--holdout", help="Fraction of images NOT used to fit the perturbation, measured apart (0..1).")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Images per forward/backward (default: all).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="paper (eq. 6: mean of the images' L2 norms) or official (the official code's mean of MSEs).")] = "paper",
    *, out_dir: Path, **common: Any,
) -> None:
    """Universal attack (eq. 5-7): one perturbation for all images; saved as .npy and PNG."""
    with progress_bar("fitting") as bar:
        report = sreval.universal(model, data, crop=crop, holdout=holdout, out=out_dir,
                                  batch=batch, progress=bar, loss=loss, **common)
    keys = ("psnr_lr", "psnr_sr", "psnr_hr")
    table = new_table(title=f"universal: {report['model']['name']}  (crop {report['universal']['crop']} LR px)")
    for col in ("alpha", "images", "n") + keys:
        table.add_column(col, justify="right")
    for s in report["summary"]:
        table.add_row(budget(s["alpha"]), "held out" if s.get("group") == "holdout" else "fitted on",
                      str(s["n"]), *[fmt(s.get(k)) for k in keys])
    out.print(table)
    report_line(out_dir)


@command(gradient(PAPER_ALPHAS), IMAGES, *ALL, LOOP)
def partial(
    model: ModelArg,
    data: DataOpt = "default",
    batch: BatchOpt = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Partial attack (eq. 8-10): attack the central half, measure outside; damage per distance ring."""
    with progress_bar("attacking") as bar:
        report = sreval.partial(model, data, out=out_dir, batch=batch, progress=bar,
                                **common)
    print_summary(report, ("psnr_lr", "psnr_sr"))
    for prof in report["permeation"]:
        rings = ", ".join(f"{d}:{m:.3g}" for d, m in list(zip(prof["distance_lr"], prof["mse_y"]))[:8])
        out.print(f"alpha {budget(prof['alpha'])}: MSE(Y) by distance in LR pixels  {rings}")
    report_line(out_dir)


@command(gradient("16/255", reference=False), IMAGES, RUN, CONVENTIONS, LOOP)
def targeted(
    model: ModelArg,
    source: Annotated[Optional[Path], typer.Option("--source", help="Source HR image (default: foreman frame 0 of the assets).")] = None,
    target: Annotated[Optional[Path], typer.Option("--target", help="Target HR image, same size (default: foreman frame 1).")] = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Targeted attack (eq. 11): make the SR output look like a target HR image."""
    with progress_bar("attacking") as bar:
        report = sreval.targeted(model, source=source, target=target, out=out_dir,
                                 progress=bar, **common)
    keys = ("psnr_target_hr", "psnr_source_hr", "psnr_lr", "psnr_lr_target")
    pair = report["targeted"]
    table = new_table(title=f"targeted: {report['model']['name']}  ({pair['source']} -> {pair['target']})")
    for k in ("alpha",) + keys:
        table.add_column(k, justify="right")
    table.add_row("clean", *[fmt(pair["clean"].get(k)) for k in keys])
    for r in report["results"]:
        table.add_row(budget(r["alpha"]), *[fmt(r.get(k)) for k in keys])
    out.print(table)
    report_line(out_dir)


@command(gradient("8/255"), *ALL, LOOP)
def transfer(
    models: Annotated[list[str], typer.Argument(help="Two or more ONNX files or zoo names, all of one scale.", show_default=False)],
    data: DataOpt = "default",
    batch: BatchOpt = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Transferability: examples made on each source model (rows) fed to each target (columns)."""
    with progress_bar("attacking") as bar:
        report = sreval.transfer(models, data, out=out_dir, batch=batch, progress=bar, **common)
    names = report["transfer"]["models"]
    for block in report["transfer"]["matrix"]:
        table = new_table(title=f"SR PSNR (dB), alpha {budget(block['alpha'])}: rows = source, columns = target")
        table.add_column("source \\ target")
        for n in names:
            table.add_column(n, justify="right")
        for src, row in zip(names, block["psnr_sr"]):
            table.add_row(src, *[("-" if v is None else Text(f"{v:.2f}", "bold") if s == src else f"{v:.2f}")
                                 for s, v in zip(names, row)])
        out.print(table)
    report_line(out_dir)


def _signed(v: float | None) -> str:
    return "n/a (needs 3+ images with varying values)" if v is None else f"{v:+.3f}"


@command(gradient("1/255"), *ALL)
def index(
    model: ModelArg,
    data: DataOpt = "default",
    samples: Annotated[int, typer.Option("--samples", help="N_s random perturbations per image.")] = 1024,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Perturbations per forward/backward (halved on out-of-memory).")] = 64,
    attack_report: Annotated[Optional[Path], typer.Option("--attack-report", help="Read the basic attack's SR PSNR from this report instead of running it.")] = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Robustness index (sec. 5.2) per image, and its correlation with the basic attack's SR PSNR."""
    with progress_bar("sampling") as bar:
        report = sreval.index(model, data, samples=samples, batch=batch, attack_report=attack_report, out=out_dir,
                              progress=bar, **common)
    table = new_table(title=f"robustness index: {report['model']['name']}")
    for col in ("image", "index", "mean b_i", "SR PSNR (basic)"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        if r["attack"] == "index":
            table.add_row(r["image"], f"{r['robustness_index']:.4g}", f"{r['b_mean']:.4g}", fmt(r.get("psnr_sr_basic")))
    out.print(table)
    ri = report["robustness_index"]
    out.print(f"correlation over {ri['n']} images: Pearson {_signed(ri['pearson'])}, "
              f"Spearman {_signed(ri['spearman'])} (negative: a higher index, a lower PSNR)")
    report_line(out_dir)


# ----------------------------------------------------------------------------- any registered attack


@command(run_folder=False)
def attacks() -> None:
    """The attack registry: every name `sreval run` and `sreval sweep --attacks` take."""
    table = new_table(title="sreval attacks")
    for col in ("name", "what", "command", "attack object"):
        table.add_column(col)
    for name, e in ATTACKS.items():
        table.add_row(name, e.what, f"sreval {e.cli}" + (f" {name}" if e.cli == "run" else ""), e.attack_name or "-")
    out.print(table)


def parse_options(items: list[str]) -> dict[str, Any]:
    """--option KEY=VALUE items; values read as JSON, else as text."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    return options


@command(IMAGES, DATA, CONVENTIONS)
def run(
    name: Annotated[str, typer.Argument(help="A registered attack with an attack object (sreval attacks).", show_default=False)],
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: Annotated[Optional[int], typer.Option("--steps", "-T", min=1, help="Iterations (default: the attack object's own).")] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="hr or clean-sr (default: the attack object's own).")] = None,
    quantize: Annotated[Optional[bool], typer.Option("--quantize/--no-quantize", help="Round the attacked LR to 8 bits (default: the attack object's own).")] = None,
    norm: Annotated[Optional[str], typer.Option("--norm", help="linf or l2 (default: the attack object's own).")] = None,
    restarts: Annotated[Optional[int], typer.Option("--restarts", min=1, help="Random restarts (default: the attack object's own).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="KEY=VALUE for any field of the attack object (repeatable; values read as JSON, else text).")] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed (default: the attack object's own).")] = None,
    *, out_dir: Path, **common: Any,
) -> None:
    """Any registered attack object over a dataset: LR and SR PSNR per image and budget. Its own
    defaults hold for every option not given."""
    given = {k: v for k, v in {"norm": norm, "restarts": restarts}.items() if v is not None}
    options = parse_options(option or [])
    twice = sorted(set(given) & set(options))
    if twice:
        raise ConfigError(f"{name}: {', '.join(twice)} given twice (as an option and in --option)")
    with progress_bar("attacking") as bar:
        report = sreval.run_attack(name, model, data, alpha=alpha, steps=steps, reference=reference,
                                   quantize=quantize, out=out_dir, progress=bar,
                                   device=device, seed=seed, options={**given, **options}, **common)
    print_summary(report, ("psnr_lr", "psnr_sr", "psnr_hr"))
    print_evidence(report)
    report_line(out_dir)
