"""What every command of the CLI shares: the consoles, the one-line error printer, the progress
bar, the option types, and option groups that a decorator adds to a command's signature (the
convention overrides, the shared loop, the data and run options), so that no command spells
them out again.

Light on purpose: importing this module must not import torch, onnxruntime or matplotlib.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from sreval.config import STRONGEST, LoopOptions
from sreval.conventions import SIGNED_TEXTS, Overrides, parse_normalize
from sreval.errors import ConfigError, SrevalError

F = TypeVar("F", bound=Callable[..., Any])
# C0 and C1 control characters and DEL: in a name from a file they would clear the screen, set the
# title, move the cursor or forge an output line (a newline).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """Text from data as it may reach a terminal: control characters and newlines escaped
    (\\x1b, \\n), everything else as it is."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class PlainConsole(Console):
    """A console that prints text from data as plain text. Markup and emoji codes are off (a
    "[/x]" in a path prints as itself); control characters are escaped (`plain`). Our own
    labels get their colour from Text styles (`label`)."""

    def __init__(self, **options: Any):
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(plain(o) if isinstance(o, str) else _plain_text(o) for o in objects), **options)


def _plain_text(obj: Any) -> Any:
    if isinstance(obj, Text):
        clean = obj.copy()
        clean.plain = plain(obj.plain)  # same length where nothing is escaped: styles stay on their spans
        return clean if len(clean.plain) == len(obj.plain) else Text(plain(obj.plain), style=obj.style)
    return obj


out = PlainConsole()
err = PlainConsole(stderr=True)


def label(tag: str, style: str, rest: object = "") -> Text:
    """'tag' in colour, then plain text."""
    return Text.assemble((tag, style), " " if rest != "" else "", plain(str(rest)))


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


def _quiet_opencv() -> None:
    """OpenCV logs decoder warnings (e.g. "PNG input buffer is incomplete") on stderr by
    itself; the error sreval reports for that image is the one line users should see."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read when cv2 is first imported
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:  # already imported (a test process, a notebook): set it directly
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A Python warning as one plain 'warning:' line (not Python's file, line and source line)."""
    err.print(label("warning:", "yellow", message), soft_wrap=True)


def _catch_interrupts() -> Any:
    """Ctrl-C stops the command (KeyboardInterrupt: clean-up runs, one 'interrupted' line);
    a second one, while it cleans up or exits (as `timeout` and job managers send), ends the
    process at once and silently: the run folder's lock dies with it, staged files are
    cleared by the next run. Returns the handler it replaced (None: none replaced)."""
    def first(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGINT, first)
    except ValueError:  # not the main thread (an embedding application): its own handling holds
        return None


def handle_errors(fn: F) -> F:
    """Turn library errors into one line + exit code; keep tracebacks for SREVAL_DEBUG=1.
    Library notes and Python warnings become one plain line each on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _quiet_opencv()
        _show_library_notes()
        warnings.showwarning = _warning_line
        previous, interrupted = _catch_interrupts(), False
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except SrevalError as e:
            err.print(label("error:", "red", e), soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            interrupted = True
            err.print(label("interrupted", "yellow"))
            raise typer.Exit(130) from None
        except Exception as e:  # a bug or an unforeseen input: still one line, unless debugging
            if os.environ.get("SREVAL_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            err.print(label("internal error:", "red", f"{type(e).__name__}: {msg} "
                            f"(SREVAL_DEBUG=1 shows the traceback)"), soft_wrap=True)
            raise typer.Exit(2) from None
        finally:
            if previous is not None and not interrupted:  # its caller's handling again
                signal.signal(signal.SIGINT, previous)

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(text: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback for the library: a bar with ETA on stderr, silent when not a TTY."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(text), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(text, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


# ----------------------------------------------------------------------------- option types

ModelArg = Annotated[str, typer.Argument(help="ONNX file, PyTorch checkpoint (.pth, .pt, .ckpt, .safetensors; needs the checkpoints extra) or zoo name.", show_default=False)]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset folder, dataset name (Set5, ...) or 'default' (embedded photos).")]
DataRoot = Annotated[Optional[Path], typer.Option("--data-root", envvar="SREVAL_DATA", help="Where dataset names resolve.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder for report.json and results.csv.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**63 - 1, help="Random seed (0 .. 2^63-1).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Use the first N images only.")]
SaveOpt = Annotated[bool, typer.Option("--save-images", help="Save LR/SR images as PNG under RUN_DIR/images.")]
NormOpt = Annotated[str, typer.Option("--norm", help="linf (the paper: --alpha bounds each pixel) or l2 (--alpha bounds the norm of the whole LR perturbation, [0,1] pixel units).")]
AlphaOpt = Annotated[str, typer.Option("--alpha", "-a", help="Budgets, e.g. 1/255,8/255 or 0.0314.")]
StepsOpt = Annotated[int, typer.Option("--steps", "-T", help="I-FGSM iterations.")]
RefOpt = Annotated[str, typer.Option("--reference", help="hr (official code), clean-sr (eq. 1), psnr-sr (eq. 1 as the SR PSNR measures it: Y, shaved, 8-bit) or auto (hr when HR exists).")]
QuantOpt = Annotated[bool, typer.Option("--quantize/--no-quantize", help="Round the attacked LR to 8 bits.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch", help="Budgets attacked together (default: all).")]


# ----------------------------------------------------------------------------- option groups


@dataclass(frozen=True)
class OptionGroup:
    """Options that several commands take, added to a command's signature by `with_options`;
    `build` turns their values into the keyword arguments the command receives."""

    params: tuple[inspect.Parameter, ...]
    build: Callable[..., dict[str, Any]]


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def input_values(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"--input-value {item!r}: expected NAME=VALUE")
        values[name.strip()] = value.strip()
    return values


def _conventions(scale: Any, range_: Any, normalize: Any, color: Any, layout: Any, preupsampled: Any, output: Any,
                 input_value: list[str] | None) -> dict[str, Overrides]:
    value_range, signed = _value_range(range_)
    if signed:  # --range -1,1: the 0..1 range, normalised to [-1, 1]
        if normalize is not None and parse_normalize(normalize) != "signed":
            raise ConfigError(f"--range -1,1 and --normalize {normalize} contradict each other")
        normalize = "signed"
    return {"conventions": Overrides(scale=scale, range=value_range, normalize=normalize, color=color, layout=layout,
                                     preupsampled=preupsampled, output=output,
                                     inputs=tuple(input_values(input_value or []).items()))}


def _value_range(text: str | None) -> tuple[float | None, bool]:
    """--range: 1, 255, or -1,1 (then True: the model reads [-1, 1])."""
    if text is None:
        return None, False
    if text.replace(" ", "") in SIGNED_TEXTS:
        return 1.0, True
    try:
        return float(text), False
    except ValueError:
        raise ConfigError(f"--range must be 1, 255 or -1,1, got {text!r}") from None


CONVENTIONS = OptionGroup((
    _param("scale", Annotated[Optional[int], typer.Option("--scale", min=1, max=16, help="Upscaling factor (default: metadata or probed).")], None),
    _param("range_", Annotated[Optional[str], typer.Option("--range", help="Model value range: 1, 255 or -1,1 (default: metadata, else detected for a foreign file, else 1).")], None),
    _param("normalize", Annotated[Optional[str], typer.Option("--normalize", help="Normalisation before the range: none, signed ([-1, 1]), imagenet, or MEAN/STD (one or three values each, RGB order, in [0, 1] units, e.g. 0.5/0.5) (default: metadata, else detected, else none).")], None),
    _param("color", Annotated[Optional[str], typer.Option("--color", help="rgb, bgr, y (MATLAB studio-range Y: VDSR, LapSRN, FSRCNN) or yfull (full-range Y: OpenCV zoo) (default: metadata, channels, detection).")], None),
    _param("layout", Annotated[Optional[str], typer.Option("--layout", help="nchw or nhwc (default: metadata or shapes).")], None),
    _param("preupsampled", Annotated[Optional[bool], typer.Option("--preupsampled/--no-preupsampled", help="Model takes the bicubic-upscaled image.")], None),
    _param("output", Annotated[Optional[int], typer.Option("--output", min=0, help="Index of the output to use (default: the one at --scale, else the largest).")], None),
    _param("input_value", Annotated[Optional[list[str]], typer.Option("--input-value", help="NAME=VALUE: a value for a non-image model input (e.g. Real-CUGAN's alpha); repeatable.")], None),
), _conventions)

_LOOP_REST = (
    _param("norm", NormOpt, "linf"),
    _param("restarts", Annotated[int, typer.Option("--restarts", min=1, help="pgd / apgd: random restarts, the best result kept per image and budget.")], 1),
    _param("quantize_aware", Annotated[bool, typer.Option("--quantize-aware/--round-at-end", help="With --quantize: round the attacked LR to 8 bits only at the end (default, as the paper), or let the loss see the rounding at every step (straight-through), so the delivered file is what was optimised.")], False),
)
# the shared loop: --method picks it (the attack command has its own --method: strongest, square)
LOOP = OptionGroup((
    _param("method", Annotated[str, typer.Option("--method", help="ifgsm (the paper's), pgd (random start, --restarts), apgd (adaptive step size, Croce & Hein) or mifgsm (momentum, for transfer).")], "ifgsm"),
    *_LOOP_REST,
), lambda method, norm, restarts, quantize_aware: {"loop": LoopOptions(method, norm, restarts, quantize_aware)})
# the loop's options without a method of its own: what the attack command combines with its --method
LOOP_NO_METHOD = OptionGroup(_LOOP_REST, lambda norm, restarts, quantize_aware: {
    "loop": LoopOptions("ifgsm", norm, restarts, quantize_aware)})
def _passed(*params: inspect.Parameter) -> OptionGroup:
    """A group whose options reach the command as they are, by name."""
    names = [p.name for p in params]
    return OptionGroup(params, lambda *values: dict(zip(names, values)))


def gradient(alpha: str, *, reference: bool = True) -> OptionGroup:
    """The gradient attack's options (--alpha with the command's default budgets, --steps,
    --reference, --quantize)."""
    params = [_param("alpha", AlphaOpt, alpha), _param("steps", StepsOpt, 50)]
    params += [_param("reference", RefOpt, "auto")] if reference else []
    return _passed(*params, _param("quantize", QuantOpt, True))


DATA = _passed(_param("data_root", DataRoot, None), _param("limit", LimitOpt, None))
RUN = _passed(_param("device", DeviceOpt, "auto"), _param("seed", SeedOpt, 0))
IMAGES = _passed(_param("save_images", SaveOpt, False))


def with_options(*groups: OptionGroup) -> Callable[[F], F]:
    """Add the groups' options to a command's signature (after its own, as typer reads them)
    and call it with what each group builds from their values: a parameter of that name, or
    the command's `**kwargs`, which typer never sees."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        added = [p for g in groups for p in g.params]
        built = {k for g in groups for k in g.build(*[p.default for p in g.params])}
        own = [p for p in sig.parameters.values() if p.name not in built and p.kind != p.VAR_KEYWORD]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for g in groups:
                kwargs.update(g.build(*[kwargs.pop(p.name) for p in g.params]))
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
        return wrapper  # type: ignore[return-value]

    return decorate


COMMANDS: list[Callable[..., Any]] = []  # every command, in the order defined; the app registers them


def command(*groups: OptionGroup, run_folder: bool = True) -> Callable[[F], F]:
    """A CLI command `sreval <function name>`: its errors as one line (handle_errors), the
    groups' options, and (with `run_folder`) `--out RUN_DIR` with the default runs/<command>."""

    def decorate(fn: F) -> F:
        out_dir = (_passed(_param("out_dir", OutOpt, Path("runs") / fn.__name__)),) if run_folder else ()
        made = handle_errors(with_options(*out_dir, *groups)(fn))
        COMMANDS.append(made)
        return made

    return decorate


def loop_options(method: str, loop: LoopOptions, ensemble: str | None = None, effort: str = "standard") -> LoopOptions:
    """The attack command's loop: its --method (square and auto attack through onnxruntime and
    leave the loop at ifgsm) and the ensemble of --method strongest with its effort."""
    members = tuple(m.strip() for m in ensemble.split(",") if m.strip()) if ensemble else STRONGEST
    return LoopOptions("ifgsm" if method in ("square", "auto") else method, loop.norm, loop.restarts,
                       loop.quantize_aware, members, effort)


# ----------------------------------------------------------------------------- printing


def print_evidence(report: dict[str, Any]) -> None:
    """One warning line per failed sanity check (they are flagged in report.json too)."""
    ev = report.get("evidence") or {}
    for c in ev.get("checks", []):
        if not c["ok"]:
            out.print(Text(f"warning: sanity check {c['name']} failed: {c['detail']}", style="yellow"))
    for note in ev.get("notes", []):
        out.print(label("note:", "yellow", note))


def fmt(value: Any, spec: str = ".2f") -> str:
    """A number in a table cell; '-' where there is none."""
    return format(value, spec) if isinstance(value, float) else "-"


def budget(alpha: float) -> str:
    return f"{alpha * 255:g}/255"


def new_table(**options: Any) -> Any:
    """A rich Table whose cells from data print as plain text (`plain`); its module is imported
    when a command prints one, not when the CLI starts."""
    from rich.table import Table

    class PlainTable(Table):
        def add_row(self, *cells: Any, **kwargs: Any) -> None:
            super().add_row(*(plain(c) if isinstance(c, str) else _plain_text(c) for c in cells), **kwargs)

    return PlainTable(**{k: plain(v) if k == "title" and isinstance(v, str) else v for k, v in options.items()})


def print_summary(report: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = new_table(title=f"{report['command']}: {report['model']['name'] if report.get('model') else ''}")
    converging = any("n_converged" in s for s in report["summary"])  # the converged `strongest`
    for k in ("attack", "alpha", "n") + keys + (("converged",) if converging else ()):
        table.add_column(k, justify="right")
    for s in report["summary"]:
        alpha = s.get("alpha") or 0.0
        conv = (f"{s['n_converged']}/{s['n']}" if "n_converged" in s else "-",) if converging else ()
        table.add_row(str(s["attack"]), budget(alpha) if alpha else "-", str(s["n"]), *[fmt(s.get(k)) for k in keys],
                      *conv)
    out.print(table)
    if (report.get("data") or {}).get("lr_note"):
        out.print(label("note:", "yellow", report["data"]["lr_note"]))


def report_line(out_dir: Path) -> None:
    out.print(f"report: {out_dir / 'report.json'}", soft_wrap=True)
