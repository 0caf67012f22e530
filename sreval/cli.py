"""The `sreval` command line: each command parses options, calls one library function, prints.

Library errors (SrevalError) become one red line on stderr and exit code 1; never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

import sreval
from sreval import zoo
from sreval.attacks.basic import STRONGEST, LoopOptions
from sreval.attacks.common import parse_alpha
from sreval.check import check_run, summary_line, write_golden
from sreval.commands import ATTACKS, PAPER_ALPHAS
from sreval.demo import DEFAULT_OUT, DemoConfig, run_demo
from sreval.errors import ConfigError, SrevalError
from sreval.htmlreport import render_report



def _quiet_opencv() -> None:
    """OpenCV logs decoder warnings (e.g. "PNG input buffer is incomplete") on stderr by
    itself; the error sreval reports for that image is the one line users should see."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when cv2 is first imported
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:  # already imported (a test process, a notebook): set it directly
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


app = typer.Typer(
    name="sreval",
    help="Adversarial robustness of super-resolution models (any ONNX file or zoo name).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup and emoji codes are off: paths, image and model names and messages come from users and
# files, and "[/x]" in one must print as itself (not raise MarkupError or vanish). Our own
# labels get their colour from Text styles (label()).
out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)


def label(tag: str, style: str, rest: object = "") -> Text:
    """'tag' in colour, then plain text."""
    return Text.assemble((tag, style), " " if rest != "" else "", str(rest))


class _Notes(logging.Handler):
    """The library's log (`sreval.*` loggers: e.g. a zoo model built on first use) as plain
    'note:' lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(label("note:", "yellow", record.getMessage()), soft_wrap=True)


def _show_library_notes() -> None:
    log = logging.getLogger("sreval")
    if not any(isinstance(h, _Notes) for h in log.handlers):
        log.addHandler(_Notes())
        log.setLevel(logging.INFO)


F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def global_options(
    max_pixels: Annotated[Optional[int], typer.Option("--max-pixels", min=1, envvar="SREVAL_MAX_PIXELS", help="Largest image (width x height) sreval decodes; larger ones are refused from their header (decompression bombs).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", min=0.001, envvar="SREVAL_TIME_LIMIT", help="Seconds one onnxruntime run on an image may take (a model that loops on large inputs); none by default. Ctrl-C always stops a run.")] = None,
) -> None:
    """Adversarial robustness of super-resolution models (any ONNX file or zoo name)."""
    if max_pixels is not None:
        os.environ["SREVAL_MAX_PIXELS"] = str(max_pixels)
    if time_limit is not None:
        os.environ["SREVAL_TIME_LIMIT"] = str(time_limit)


def handle_errors(fn: F) -> F:
    """Turn library errors into one line + exit code; keep tracebacks for SREVAL_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _quiet_opencv()
        _show_library_notes()
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except SrevalError as e:
            err.print(label("error:", "red", e), soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print(label("interrupted", "yellow"))
            raise typer.Exit(130) from None
        except Exception as e:  # a bug or an unforeseen input: still one line, unless debugging
            if os.environ.get("SREVAL_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            err.print(label("internal error:", "red", f"{type(e).__name__}: {msg} "
                            f"(SREVAL_DEBUG=1 shows the traceback)"), soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback for the library: a bar with ETA on stderr, silent when not a TTY."""
    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(label, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


# ----------------------------------------------------------------------------- shared options

ModelArg = Annotated[str, typer.Argument(help="ONNX file, PyTorch checkpoint (.pth, .pt, .ckpt, .safetensors; needs the checkpoints extra) or zoo name.", show_default=False)]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset folder, dataset name (Set5, ...) or 'default' (embedded photos).")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", envvar="SREVAL_DATA", help="Where dataset names resolve.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder for report.json and results.csv.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed (0 .. 2^63-1).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use the first N images only.")]
ScaleOpt = Annotated[Optional[int], typer.Option("--scale", min=1, max=16, help="Upscaling factor (default: metadata or probed).")]
RangeOpt = Annotated[Optional[float], typer.Option("--range", help="Model value range: 1 or 255 (default: metadata, else 1).")]
ColorOpt = Annotated[Optional[str], typer.Option("--color", help="rgb, bgr, y (MATLAB studio-range Y: VDSR, LapSRN, FSRCNN) or yfull (full-range Y: OpenCV zoo) (default: metadata, channels, detection).")]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help="nchw or nhwc (default: metadata or shapes).")]
PreupOpt = Annotated[Optional[bool], typer.Option("--preupsampled/--no-preupsampled", help="Model takes the bicubic-upscaled image.")]
OutputOpt = Annotated[Optional[int], typer.Option("--output", min=0, help="Index of the output to use (default: the one at --scale, else the largest).")]
InputValueOpt = Annotated[Optional[list[str]], typer.Option(
    "--input-value", help="NAME=VALUE: a value for a non-image model input (e.g. Real-CUGAN's alpha); repeatable.")]
SaveOpt = Annotated[bool, typer.Option("--save-images", help="Save LR/SR images as PNG under RUN_DIR/images.")]
LoopMethodOpt = Annotated[str, typer.Option("--method", help="ifgsm (the paper's), pgd (random start, --restarts), apgd (adaptive step size, Croce & Hein) or mifgsm (momentum, for transfer).")]
NormOpt = Annotated[str, typer.Option("--norm", help="linf (the paper: --alpha bounds each pixel) or l2 (--alpha bounds the norm of the whole LR perturbation, [0,1] pixel units).")]
RestartsOpt = Annotated[int, typer.Option("--restarts", min=1, help="pgd / apgd: random restarts, the best result kept per image and budget.")]
AlphaOpt = Annotated[str, typer.Option("--alpha", "-a", help="Budgets, e.g. 1/255,8/255 or 0.0314.")]
StepsOpt = Annotated[int, typer.Option("--steps", "-T", help="I-FGSM iterations.")]
RefOpt = Annotated[str, typer.Option("--reference", help="hr (official code), clean-sr (eq. 1) or auto (hr when HR exists).")]
QuantOpt = Annotated[bool, typer.Option("--quantize/--no-quantize", help="Round the attacked LR to 8 bits.")]
RoundOpt = Annotated[bool, typer.Option("--quantize-aware/--round-at-end", help="With --quantize: round the attacked LR to 8 bits only at the end (default, as the paper), or let the loss see the rounding at every step (straight-through), so the delivered file is what was optimised.")]


def _loop(method: str = "ifgsm", norm: str = "linf", restarts: int = 1, quantize_aware: bool = False,
          ensemble: str | None = None) -> LoopOptions:
    """The shared loop's options from the command line (validated by the library)."""
    members = tuple(m.strip() for m in ensemble.split(",") if m.strip()) if ensemble else STRONGEST
    return LoopOptions(method, norm, restarts, quantize_aware, members)


def _conv(scale: Any, range_: Any, color: Any, layout: Any, preupsampled: Any, output: Any,
          input_value: list[str] | None = None) -> dict[str, Any]:
    conv = dict(scale=scale, range=range_, color=color, layout=layout, preupsampled=preupsampled, output=output)
    if input_value:
        conv["inputs"] = _input_values(input_value)
    return conv


def _input_values(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"--input-value {item!r}: expected NAME=VALUE")
        values[name.strip()] = value.strip()
    return values


def _print_evidence(report: dict[str, Any]) -> None:
    """One warning line per failed sanity check (they are flagged in report.json too)."""
    ev = report.get("evidence") or {}
    for c in ev.get("checks", []):
        if not c["ok"]:
            out.print(Text(f"warning: sanity check {c['name']} failed: {c['detail']}", style="yellow"))
    for note in ev.get("notes", []):
        out.print(label("note:", "yellow", note))


def _print_summary(report: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=f"{report['command']}: {report['model']['name'] if report.get('model') else ''}")
    for k in ("attack", "alpha", "n") + keys:
        table.add_column(k, justify="right")
    for s in report["summary"]:
        alpha = s.get("alpha") or 0.0
        cells = [str(s["attack"]), f"{alpha * 255:g}/255" if alpha else "-", str(s["n"])]
        cells += [f"{s[k]:.2f}" if isinstance(s.get(k), float) else "-" for k in keys]
        table.add_row(*cells)
    out.print(table)
    if (report.get("data") or {}).get("lr_note"):
        out.print(label("note:", "yellow", report["data"]["lr_note"]))


# ----------------------------------------------------------------------------- commands


@app.command()
@handle_errors
def attack(
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/attack"),
    save_images: SaveOpt = False,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Budgets attacked together (default: all).")] = None,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
    defense: Annotated[Optional[list[str]], typer.Option("--defense", help="resize or self-ensemble (repeatable): adds rows basic+D (bare attack through D) and basic+D-adaptive (attack through D).")] = None,
    method: Annotated[str, typer.Option("--method", help="ifgsm (the paper's I-FGSM), pgd, apgd, mifgsm, strongest (per image and budget the worst case over --ensemble), square (gradient-free, onnxruntime only, weaker) or auto (square where onnx2torch cannot convert the model).")] = "ifgsm",
    norm: NormOpt = "linf",
    restarts: RestartsOpt = 1,
    quantize_aware: RoundOpt = False,
    ensemble: Annotated[Optional[str], typer.Option("--ensemble", help="Members of --method strongest: METHOD, METHOD@REFERENCE or shift (default ifgsm,pgd@clean-sr,apgd@clean-sr,shift: the paper's I-FGSM, PGD/APGD on eq. 1 (the distance the SR PSNR measures), and X0 +- alpha everywhere, the worst case of a linear model).")] = None,
    sanity: Annotated[bool, typer.Option("--sanity/--no-sanity", help="Run the sanity checks (two short probe attacks on the first image); failures are warnings and flags in report.json.")] = True,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Square attack: model runs per image.")] = 500,
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16/fp16 mixed precision for the attack's forward/backward (the report states the PSNR difference to fp32).")] = "fp32",
) -> None:
    """Basic attack (I-FGSM, paper eq. 1-3): LR and SR PSNR per image and budget."""
    loop = _loop("ifgsm" if method in ("square", "auto") else method, norm, restarts, quantize_aware, ensemble)
    with progress_bar("attacking") as bar:
        report = sreval.attack(
            model, data, alpha=alpha, steps=steps, reference=reference, quantize=quantize,
            out=out_dir, save_images=save_images, batch=batch, data_root=data_root,
            limit=limit, device=device, seed=seed, progress=bar, method=method, loop=loop, queries=queries,
            precision=precision, sanity=sanity, defense=defense,
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value),
        )
    _print_summary(report, ("psnr_lr", "psnr_sr", "psnr_hr"))
    _print_evidence(report)
    if report["config"].get("note"):
        out.print(label("note:", "yellow", report["config"]["note"]))
    if report.get("precision_check"):
        pc = report["precision_check"]
        out.print(f"{pc['precision']} vs fp32 on {', '.join(pc['images'])}: mean |SR PSNR difference| "
                  f"{pc['mean_abs_difference_db']:.3f} dB", highlight=False)
    out.print(f"report: {out_dir / 'report.json'}")


@app.command()
@handle_errors
def evaluate(
    model: ModelArg,
    data: DataOpt = "default",
    out_dir: OutOpt = Path("runs/evaluate"),
    save_images: SaveOpt = False,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
    defense: Annotated[Optional[list[str]], typer.Option("--defense", help="resize or self-ensemble (repeatable): adds clean rows none+D through the defense.")] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="auto (PyTorch conversion, onnxruntime where it cannot convert), torch or onnxruntime (no conversion).")] = "auto",
) -> None:
    """Clean SR quality against HR: PSNR (Y and RGB) and SSIM per image."""
    with progress_bar("evaluating") as bar:
        report = sreval.evaluate(
            model, data, out=out_dir, save_images=save_images, data_root=data_root,
            limit=limit, device=device, seed=seed, progress=bar, runtime=runtime, defense=defense,
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value),
        )
    _print_summary(report, ("psnr_sr", "psnr_sr_rgb", "ssim_sr"))
    if report["config"].get("runtime") == "onnxruntime" and runtime == "auto":
        out.print(label("note:", "yellow", "onnx2torch cannot convert this model: evaluated with onnxruntime "
                                           "(no parity check possible)"))
    out.print(f"report: {out_dir / 'report.json'}")


@app.command()
@handle_errors
def inspect(
    model: ModelArg,
    device: DeviceOpt = "auto",
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Show the detected conventions, scale, opset, parity and unsupported operators."""
    info = sreval.inspect(model, device=device, conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value))
    table = Table(show_header=False, title=f"sreval inspect: {info['path']}")
    for k, v in info.items():
        table.add_row(k, v if isinstance(v, str) else repr(v))
    out.print(table)
    if info.get("unsupported_ops") or info.get("conversion"):
        raise typer.Exit(1)


@app.command("export")
@handle_errors
def export_command(
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


# ----------------------------------------------------------------------------- zoo

zoo_app = typer.Typer(help="The model zoo: list, build, verify, Table 1.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
@handle_errors
def zoo_list() -> None:
    """Every manifest entry: built or not, weights available or not, Table 1 facts."""
    table = Table(title="sreval model zoo")
    for col in ("name", "arch", "scale", "built", "weights", "Table 1 (params / conv / GAN)", "weights source"):
        table.add_column(col)
    for e in zoo.manifest().values():
        t1 = e.table1
        facts = f"{t1['params']} / {t1['conv_layers']} / {'yes' if t1['gan'] else 'no'}" if t1 else "-"
        table.add_row(e.name, e.arch, f"x{e.scale}", "yes" if e.built else "no",
                      "yes" if zoo.weights_available(e) else "no", facts, e.weights.describe())
    out.print(table)


@zoo_app.command("build")
@handle_errors
def zoo_build(
    names: Annotated[list[str], typer.Argument(help="Zoo names ('all': every entry whose weights are here).")],
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Local checkpoint (one NAME only), checked against the manifest's SHA-256.")] = None,
    other_weights: Annotated[bool, typer.Option("--other-weights", help="Build from a --weights file that is not the official checkpoint; the model is then named NAME@<digest>, never NAME.")] = False,
) -> None:
    """Export zoo entries to canonical ONNX files (parity-checked against onnxruntime)."""
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
    verdicts = zoo.verify(names, data, tol=tol, data_root=data_root, device=device)
    table = Table(title=f"zoo verify on {data} (tolerance {tol} dB)")
    for col in ("name", "PSNR (Y)", "expected", "parity", "status"):
        table.add_column(col)
    for v in verdicts:
        colour = "red" if v.failed else "green"
        table.add_row(v.name, f"{v.psnr:.3f}" if v.psnr is not None else "-",
                      f"{v.expected:.3f}" if v.expected is not None else "-",
                      f"{v.parity:.1e}" if v.parity is not None else "-",
                      label(v.status, colour, v.message))
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
    rows = zoo.table(names)
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in rows]))
        return
    table = Table(title="Table 1: parameters and convolutional layers (x4 graph)")
    for col in ("name", "params", "x4-graph params", "checkpoint params", "conv layers", "GAN", "paper", "match"):
        table.add_column(col)
    for r in rows:
        paper = f"{r.paper_params} / {r.paper_conv_layers}" if r.paper_params else "-"
        match = {True: Text("yes", "green"), False: Text("NO", "red"), None: "-"}[r.matches_paper]
        table.add_row(r.name, r.params_m, f"{r.params:,}", f"{r.params_checkpoint:,}" if r.params_checkpoint else "-",
                      str(r.conv_layers), "yes" if r.gan_trained else "no", paper, match)
    out.print(table)


# ----------------------------------------------------------------------------- the rest of the paper
# universal, partial and targeted attacks, transferability, robustness index (defenses: --defense)



def _report_line(out_dir: Path) -> None:
    out.print(f"report: {out_dir / 'report.json'}")


def _signed(v: float | None) -> str:
    return "n/a (needs 3+ images with varying values)" if v is None else f"{v:+.3f}"


@app.command()
@handle_errors
def universal(
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    crop: Annotated[Optional[int], typer.Option("--crop", help="LR side of the square centre crop (default: the largest fitting every image).")] = None,
    holdout: Annotated[Optional[float], typer.Option("--holdout", help="Fraction of images NOT used to fit the perturbation, measured apart (0..1).")] = None,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/universal"),
    save_images: SaveOpt = False,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Images per forward/backward (default: all).")] = None,
    loss: Annotated[str, typer.Option("--loss", help="paper (eq. 6: mean of the images' L2 norms) or official (the official code's mean of MSEs).")] = "paper",
    method: LoopMethodOpt = "ifgsm", norm: NormOpt = "linf", restarts: RestartsOpt = 1, quantize_aware: RoundOpt = False,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Universal attack (eq. 5-7): one perturbation for all images; saved as .npy and PNG."""
    with progress_bar("fitting") as bar:
        report = sreval.universal(
            model, data, alpha=alpha, steps=steps, crop=crop, holdout=holdout, reference=reference,
            quantize=quantize, out=out_dir, save_images=save_images, batch=batch, data_root=data_root,
            limit=limit, device=device, seed=seed, progress=bar, loss=loss,
            loop=_loop(method, norm, restarts, quantize_aware),
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value))
    keys = ("psnr_lr", "psnr_sr", "psnr_hr")
    table = Table(title=f"universal: {report['model']['name']}  (crop {report['universal']['crop']} LR px)")
    for col in ("alpha", "images", "n") + keys:
        table.add_column(col, justify="right")
    for s in report["summary"]:
        table.add_row(f"{s['alpha'] * 255:g}/255", "held out" if s.get("group") == "holdout" else "fitted on",
                      str(s["n"]), *[f"{s[k]:.2f}" if isinstance(s.get(k), float) else "-" for k in keys])
    out.print(table)
    _report_line(out_dir)


@app.command()
@handle_errors
def partial(
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/partial"),
    save_images: SaveOpt = False,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Budgets attacked together (default: all).")] = None,
    method: LoopMethodOpt = "ifgsm", norm: NormOpt = "linf", restarts: RestartsOpt = 1, quantize_aware: RoundOpt = False,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Partial attack (eq. 8-10): attack the central half, measure outside; damage per distance ring."""
    with progress_bar("attacking") as bar:
        report = sreval.partial(
            model, data, alpha=alpha, steps=steps, reference=reference, quantize=quantize, out=out_dir,
            save_images=save_images, batch=batch, data_root=data_root, limit=limit, device=device,
            seed=seed, progress=bar, conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value),
            loop=_loop(method, norm, restarts, quantize_aware))
    _print_summary(report, ("psnr_lr", "psnr_sr"))
    for prof in report["permeation"]:
        rings = ", ".join(f"{d}:{m:.3g}" for d, m in list(zip(prof["distance_lr"], prof["mse_y"]))[:8])
        out.print(f"alpha {prof['alpha'] * 255:g}/255: MSE(Y) by distance in LR pixels  {rings}")
    _report_line(out_dir)


@app.command()
@handle_errors
def targeted(
    model: ModelArg,
    source: Annotated[Optional[Path], typer.Option("--source", help="Source HR image (default: foreman frame 0 of the assets).")] = None,
    target: Annotated[Optional[Path], typer.Option("--target", help="Target HR image, same size (default: foreman frame 1).")] = None,
    alpha: AlphaOpt = "16/255",
    steps: StepsOpt = 50,
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/targeted"),
    save_images: SaveOpt = False,
    method: LoopMethodOpt = "ifgsm", norm: NormOpt = "linf", restarts: RestartsOpt = 1, quantize_aware: RoundOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Targeted attack (eq. 11): make the SR output look like a target HR image."""
    with progress_bar("attacking") as bar:
        report = sreval.targeted(
            model, source=source, target=target, alpha=alpha, steps=steps, quantize=quantize,
            out=out_dir, save_images=save_images, device=device, seed=seed, progress=bar,
            loop=_loop(method, norm, restarts, quantize_aware),
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value))
    keys = ("psnr_target_hr", "psnr_source_hr", "psnr_lr", "psnr_lr_target")
    table = Table(title=f"targeted: {report['model']['name']}  ({report['targeted']['source']} -> {report['targeted']['target']})")
    for k in ("alpha",) + keys:
        table.add_column(k, justify="right")
    clean = report["targeted"]["clean"]
    table.add_row("clean", *[f"{clean[k]:.2f}" if isinstance(clean.get(k), float) else "-" for k in keys])
    for r in report["results"]:
        table.add_row(f"{r['alpha'] * 255:g}/255", *[f"{r[k]:.2f}" if isinstance(r.get(k), float) else "-" for k in keys])
    out.print(table)
    _report_line(out_dir)


@app.command()
@handle_errors
def transfer(
    models: Annotated[list[str], typer.Argument(help="Two or more ONNX files or zoo names, all of one scale.", show_default=False)],
    data: DataOpt = "default",
    alpha: AlphaOpt = "8/255",
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/transfer"),
    batch: Annotated[Optional[int], typer.Option("--batch", help="Budgets attacked together (default: all).")] = None,
    method: LoopMethodOpt = "ifgsm", norm: NormOpt = "linf", restarts: RestartsOpt = 1, quantize_aware: RoundOpt = False,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Transferability: examples made on each source model (rows) fed to each target (columns)."""
    with progress_bar("attacking") as bar:
        report = sreval.transfer(
            models, data, alpha=alpha, steps=steps, reference=reference, quantize=quantize,
            out=out_dir, batch=batch, data_root=data_root, limit=limit, device=device, seed=seed,
            progress=bar, conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value),
            loop=_loop(method, norm, restarts, quantize_aware))
    names = report["transfer"]["models"]
    for block in report["transfer"]["matrix"]:
        matrix = block["psnr_sr"]
        table = Table(title=f"SR PSNR (dB), alpha {block['alpha'] * 255:g}/255: rows = source, columns = target")
        table.add_column("source \\ target")
        for n in names:
            table.add_column(n, justify="right")
        for src, row in zip(names, matrix):
            table.add_row(src, *[("-" if v is None else Text(f"{v:.2f}", "bold") if s == src else f"{v:.2f}")
                                 for s, v in zip(names, row)])
        out.print(table)
    _report_line(out_dir)


@app.command()
@handle_errors
def index(
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = "1/255",
    samples: Annotated[int, typer.Option("--samples", help="N_s random perturbations per image.")] = 1024,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Perturbations per forward/backward (halved on out-of-memory).")] = 64,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    attack_report: Annotated[Optional[Path], typer.Option("--attack-report", help="Read the basic attack's SR PSNR from this report instead of running it.")] = None,
    out_dir: OutOpt = Path("runs/index"),
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Robustness index (sec. 5.2) per image, and its correlation with the basic attack's SR PSNR."""
    with progress_bar("sampling") as bar:
        report = sreval.index(
            model, data, alpha=alpha, samples=samples, batch=batch, steps=steps, reference=reference,
            quantize=quantize, attack_report=attack_report, out=out_dir, data_root=data_root,
            limit=limit, device=device, seed=seed, progress=bar,
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value))
    table = Table(title=f"robustness index: {report['model']['name']}")
    for col in ("image", "index", "mean b_i", "SR PSNR (basic)"):
        table.add_column(col, justify="right")
    for r in report["results"]:
        if r["attack"] == "index":
            ps = r.get("psnr_sr_basic")
            table.add_row(r["image"], f"{r['robustness_index']:.4g}", f"{r['b_mean']:.4g}",
                          f"{ps:.2f}" if isinstance(ps, float) else "-")
    out.print(table)
    ri = report["robustness_index"]
    out.print(f"correlation over {ri['n']} images: Pearson {_signed(ri['pearson'])}, "
              f"Spearman {_signed(ri['spearman'])} (negative: a higher index, a lower PSNR)")
    _report_line(out_dir)


# ----------------------------------------------------------------------------- any registered attack


@app.command("attacks")
@handle_errors
def attacks_command() -> None:
    """The attack registry: every name `sreval run` and `sreval sweep --attacks` take."""
    table = Table(title="sreval attacks")
    for col in ("name", "what", "command", "attack object"):
        table.add_column(col)
    for name, e in ATTACKS.items():
        table.add_row(name, e.what, f"sreval {e.cli}" + (f" {name}" if e.cli == "run" else ""),
                      e.attack.__name__ if e.attack else "-")
    out.print(table)


@app.command("run")
@handle_errors
def run_command(
    name: Annotated[str, typer.Argument(help="A registered attack with an attack object (sreval attacks).", show_default=False)],
    model: ModelArg,
    data: DataOpt = "default",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/run"),
    save_images: SaveOpt = False,
    norm: NormOpt = "linf", restarts: RestartsOpt = 1, quantize_aware: RoundOpt = False,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="KEY=VALUE for the attack object (repeatable; values read as JSON, else text).")] = None,
    data_root: DataRoot = None,
    limit: LimitOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    scale: ScaleOpt = None, range_: RangeOpt = None, color: ColorOpt = None,
    layout: LayoutOpt = None, preupsampled: PreupOpt = None, output: OutputOpt = None,
    input_value: InputValueOpt = None,
) -> None:
    """Any registered attack object over a dataset: LR and SR PSNR per image and budget."""
    with progress_bar("attacking") as bar:
        report = sreval.run_attack(
            name, model, data, alpha=alpha, steps=steps, reference=reference, quantize=quantize, out=out_dir,
            save_images=save_images, data_root=data_root, limit=limit, device=device, seed=seed, progress=bar,
            loop=_loop("ifgsm", norm, restarts, quantize_aware), options=_options(option or []),
            conventions=_conv(scale, range_, color, layout, preupsampled, output, input_value))
    _print_summary(report, ("psnr_lr", "psnr_sr", "psnr_hr"))
    _print_evidence(report)
    _report_line(out_dir)


def _options(items: list[str]) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- sweeps, reports, checks, demo


def _fmt_db(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else "inf" if v is None else str(v)


@app.command()
@handle_errors
def sweep(
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated ONNX files or zoo names.", show_default=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="Comma-separated dataset names (Set5, Set14, BSD100: under --data-root), folders, or 'default'.")] = "Set5",
    attacks: Annotated[str, typer.Option("--attacks", help=f"Comma-separated, from the registry (sreval attacks): {', '.join(ATTACKS)}.")] = "basic",
    alpha: AlphaOpt = PAPER_ALPHAS,
    steps: StepsOpt = 50,
    reference: RefOpt = "auto",
    quantize: QuantOpt = True,
    out_dir: OutOpt = Path("runs/sweep"),
    crop: Annotated[Optional[int], typer.Option("--crop", help="LR side of a centre crop of every image (HR cropped above it).")] = None,
    limit: LimitOpt = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Budgets (universal: images) per forward/backward.")] = None,
    index_samples: Annotated[int, typer.Option("--index-samples", help="N_s of the robustness index (attack 'index', at the smallest budget).")] = 1024,
    defenses: Annotated[str, typer.Option("--defenses", help="Defenses of the attack 'defense'.")] = "resize,self-ensemble",
    keep_images: Annotated[int, typer.Option("--keep-images", help="Images per cell whose PNGs are kept for the report's figures.")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local, or ray (cluster at RAY_ADDRESS, else a local Ray; needs the ray extra).")] = "local",
    method: Annotated[str, typer.Option("--method", help="The gradient attack: ifgsm, pgd, apgd, mifgsm, or strongest (basic cells; the other attacks then use ifgsm).")] = "ifgsm",
    norm: NormOpt = "linf",
    data_root: DataRoot = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Run the grid models x datasets x attacks (all budgets per cell); finished cells are cached
    and an interrupted sweep resumes where it stopped."""
    with progress_bar("cells") as bar:
        report = sreval.sweep(models, data, attacks=attacks, alpha=alpha, steps=steps, reference=reference,
                              quantize=quantize, out=out_dir, crop=crop, limit=limit, batch=batch,
                              index_samples=index_samples, defenses=defenses, keep_images=keep_images,
                              executor=executor, method=method, norm=norm, data_root=data_root, device=device,
                              seed=seed, progress=bar)
    cells = report["sweep"]["cells"]
    done = [c.get("outcome") for c in cells]
    table = Table(title=f"sweep: {len(cells)} cells ({done.count('done')} computed, {done.count('cached')} cached)")
    for col in ("attack", "model", "dataset", "status"):
        table.add_column(col)
    for c in cells:
        table.add_row(c["attack"], c["model"], c["dataset"], c.get("outcome") or c["status"])
    out.print(table)
    for note in report["sweep"].get("repaired", []):
        out.print(label("note:", "yellow", f"damaged cell {note}"), soft_wrap=True)
    _report_line(out_dir)
    out.print(f"render it: sreval report {out_dir}", soft_wrap=True)


@app.command("report")
@handle_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A sweep folder or any job's output folder.", show_default=False)],
    html: Annotated[Optional[Path], typer.Option("--html", help="HTML file to write (default RUN_DIR/report.html).")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Markdown file (default RUN_DIR/report.md).")] = None,
) -> None:
    """Render a run as one self-contained HTML file (the paper's figures) and a Markdown summary."""
    rendered = render_report(run_dir, html_path=html, markdown_path=markdown)
    say = err if "-" in (str(html), str(markdown)) else out  # standard output holds the report itself
    say.print(f"sections: {', '.join(rendered.sections)}")
    say.print(f"html: {rendered.html}", soft_wrap=True)
    say.print(f"markdown: {rendered.markdown}", soft_wrap=True)


@app.command()
@handle_errors
def check(
    run_dir: Annotated[Path, typer.Argument(help="A sweep folder or any job's output folder.", show_default=False)],
    golden: Annotated[Path, typer.Option("--golden", help="Golden file (JSON, schema sreval.golden/1).", show_default=False)],
    tol: Annotated[float, typer.Option("--tol", help="Allowed |difference| of a PSNR in dB (other numbers: the same as a power ratio).")] = 0.1,
    update: Annotated[bool, typer.Option("--update", help="Write the golden file from this run instead of checking.")] = False,
) -> None:
    """Compare every number of a run with a golden file; exit 1 listing each regression."""
    if update:
        g = write_golden(run_dir, golden)
        out.print(f"golden file written: {golden} ({len(g['cells'])} cells, "
                  f"{sum(len(v) for r in g['cells'].values() for v in r.values())} numbers)", soft_wrap=True)
        return
    result = check_run(run_dir, golden, tol=tol)
    for r in result.regressions:  # one line each (cell / row / metric: expected, got): greppable in CI logs
        out.print(f"regression: {r.line()}", highlight=False, soft_wrap=True)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)
    for n in result.new:
        out.print(f"new (not in the golden file): {n}", highlight=False, soft_wrap=True)
    if not result.ok:
        err.print(label("error:", "red", summary_line(result)), soft_wrap=True)
        raise typer.Exit(1)
    out.print(summary_line(result))


@app.command()
@handle_errors
def demo(
    out_dir: OutOpt = DEFAULT_OUT,
    models: Annotated[str, typer.Option("--models", "-m", help="Comma-separated zoo names or ONNX files.")] = ",".join(
        DemoConfig.models),
    limit: Annotated[int, typer.Option("--limit", min=1, help="Embedded photos used.")] = DemoConfig.limit,
    crop: Annotated[int, typer.Option("--crop", min=1, help="LR side of the centre crop of each photo.")] = DemoConfig.crop,
    steps: StepsOpt = DemoConfig.steps,
    alpha: AlphaOpt = ",".join(f"{a * 255:g}/255" for a in DemoConfig.alphas),
    device: DeviceOpt = "auto",
    seed: SeedOpt = DemoConfig.seed,
) -> None:
    """The main job, offline: build the zoo models a fresh machine can build, attack the embedded
    photos at a few budgets, render the HTML report, print a short table."""
    cfg = DemoConfig(models=tuple(m.strip() for m in models.split(",") if m.strip()), limit=limit, crop=crop,
                     steps=steps, alphas=tuple(parse_alpha(alpha)), seed=seed)
    with progress_bar("demo") as bar:
        result = run_demo(cfg, out_dir, device=device, progress=bar)
    table = Table(title=f"basic attack, {limit} embedded photo(s), {crop}x{crop} LR crops, T = {steps}")
    table.add_column("model", no_wrap=True)
    for col in ("alpha", "LR PSNR", "SR PSNR", "SR vs HR", "clean SR vs HR"):
        table.add_column(col, justify="right")
    for r in result.table:
        table.add_row(str(r["model"]), f"{r['alpha'] * 255:g}/255", _fmt_db(r["psnr_lr"]), _fmt_db(r["psnr_sr"]),
                      _fmt_db(r["psnr_hr"]), _fmt_db(r["clean_psnr"]))
    out.print(table)
    out.print("PSNR in dB (Y channel); LR/SR PSNR: attacked vs clean, lower = more damage")
    for f in result.findings:
        if f.verdict != "not tested":
            out.print(f"finding: {f.claim}: {f.verdict}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"report: {result.html}", soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
