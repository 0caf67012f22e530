"""The report every job writes: its typed shape, its JSON Schema, and the one reader and writer.

* The shape: `Row` (one image at one budget), `SummaryRow` (means per attack and budget) and
  `Report` are TypedDicts; `report_schema()` derives the JSON Schema `sreval.report/2` from
  them, and the package ships it as `report.schema.json` (a test keeps the two equal), so
  users and CI can validate what they parse with any JSON Schema tool.
* `write_report` validates, then writes report.json and results.csv atomically and together;
  `read_json` / `read_report` are the one reader of our JSON files (reports, cached cells,
  golden files, sweep plans): every failure is one DataError line.
* What every report holds about the model and the data (`model_info`, `data_info`).

Reports of the earlier schema `sreval.report/1` (no `kind`) stay readable.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import platform
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Union

import jsonschema
import torch

from sreval.errors import DataError
from sreval.files import atomic_write_many, claim_run_dir

if TYPE_CHECKING:  # only described here
    from sreval.data import Sample
    from sreval.model import SRModel

SCHEMA = "sreval.report/2"
READABLE = ("sreval.report/1", SCHEMA)  # /1: the same shape without `kind`
SCHEMA_FILE = "report.schema.json"

# ----------------------------------------------------------------------------- the typed shape

# The metrics of a row (dB, or SSIM in [0, 1]); None in JSON is an infinite PSNR (unchanged image).
PSNR_LR, PSNR_SR, PSNR_LR_RGB, PSNR_SR_RGB, PSNR_HR, SSIM_HR, SSIM_SR = (
    "psnr_lr", "psnr_sr", "psnr_lr_rgb", "psnr_sr_rgb", "psnr_hr", "ssim_hr", "ssim_sr")
METRICS = (PSNR_LR, PSNR_SR, PSNR_LR_RGB, PSNR_SR_RGB, PSNR_HR, SSIM_HR, SSIM_SR)
Metric = Union[float, None]


class _RowKeys(TypedDict):
    image: str
    attack: str  # the registry's name of what made the row ('none' for clean rows)
    alpha: float  # the budget (0 for clean rows)


class Row(_RowKeys, total=False):
    """One image at one budget. Attack rows carry the loop's evidence; each job adds its own."""

    psnr_lr: Metric  # attacked LR vs clean LR
    psnr_sr: Metric  # SR of attacked LR vs SR of clean LR (attack rows); SR vs HR (clean rows)
    psnr_lr_rgb: Metric
    psnr_sr_rgb: Metric
    psnr_hr: Metric  # SR of attacked LR vs HR
    ssim_hr: Metric
    ssim_sr: Metric
    method: str  # the member of the loop that made the row ('apgd-linf@clean-sr', ...)
    psnr_sr_by_method: dict[str, Metric]  # `strongest`: what each member reached
    converged: bool  # `strongest`: the last doubling of its iterations moved SR PSNR by <= the threshold
    convergence: dict[str, Any]  # `strongest`: passes, gain of the last doubling, restart spread, per member
    loss_curve: list[Metric]  # the loss at the start and after every step
    bad_grad_steps: int
    restart_best_loss: list[Metric]
    returned_loss: Metric
    queries: int  # square attack
    group: str  # universal: fit | holdout; transfer: 'source -> target'
    loss: str  # universal: paper | official
    psnr_sr_vs_bare: Metric  # defenses
    psnr_sr_inside: Metric  # partial attack
    mse_ring1: Metric
    half_distance_lr: Union[int, None]
    permeation: dict[str, Any]
    source: str  # transfer
    target: str  # transfer and targeted
    white_box: bool
    robustness_index: Metric  # index
    b_mean: Metric
    b_std: Metric
    samples: int
    psnr_sr_basic: Metric
    psnr_target_hr: Metric  # targeted
    psnr_source_hr: Metric
    psnr_lr_target: Metric
    closer_to_target: bool
    model: str  # a sweep's merged rows
    dataset: str
    cell: str


class _SummaryKeys(TypedDict):
    attack: str
    alpha: Union[float, None]
    n: int


class SummaryRow(_SummaryKeys, total=False):
    """Means over images per (attack, alpha, and group/model/dataset where rows have them)."""

    group: str
    model: str
    dataset: str
    psnr_lr: Metric
    psnr_sr: Metric
    psnr_lr_rgb: Metric
    psnr_sr_rgb: Metric
    psnr_hr: Metric
    ssim_hr: Metric
    ssim_sr: Metric
    n_converged: int  # `strongest`: rows whose attack converged (of n)


class _ReportKeys(TypedDict):
    schema: str
    created: str
    command: str
    model: Union[dict[str, Any], None]
    data: Union[dict[str, Any], None]
    config: dict[str, Any]
    environment: dict[str, Any]
    conventions: dict[str, Any]
    results: list[Row]
    summary: list[SummaryRow]


class Report(_ReportKeys, total=False):
    """A job's report; each job adds its own sections (the keys below)."""

    kind: str  # what made it: a registry name (clean, basic, defense, ...) or sweep; required since /2
    evidence: dict[str, Any]
    defense: dict[str, Any]
    blackbox: dict[str, Any]
    precision_check: dict[str, Any]
    universal: dict[str, Any]
    permeation: list[dict[str, Any]]
    transfer: dict[str, Any]
    robustness_index: dict[str, Any]
    targeted: dict[str, Any]
    sweep: dict[str, Any]
    cell: dict[str, Any]


# Keys every report has; anything else in a cell's report is a feature's own section.
STANDARD_KEYS = frozenset(_ReportKeys.__annotations__) | {"kind", "cell"}


def _schema_of(tp: Any) -> dict[str, Any]:
    """The JSON Schema of a Python annotation (the types the report uses)."""
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__"):  # a TypedDict
        hints = typing.get_type_hints(tp)
        return {"type": "object", "properties": {k: _schema_of(v) for k, v in hints.items()},
                "required": sorted(tp.__required_keys__), "additionalProperties": True}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": _schema_of(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1])}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON Schema for {tp!r}")


def report_schema() -> dict[str, Any]:
    """The JSON Schema of `sreval.report/2` (what `report.schema.json` holds)."""
    schema = _schema_of(Report)
    schema["properties"]["schema"] = {"enum": list(READABLE)}
    since_2 = {"if": {"properties": {"schema": {"const": SCHEMA}}}, "then": {"required": ["kind"]}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA,
            "title": "sreval report", **schema, "allOf": [since_2]}


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    shipped = json.loads((resources.files("sreval") / SCHEMA_FILE).read_text())
    return jsonschema.Draft202012Validator(shipped)


def schema_errors(report: Any) -> list[str]:
    """Where a report breaks the shipped schema (empty: it validates)."""
    errors = sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message[:200]}" for e in errors]


# ----------------------------------------------------------------------------- writing


def clean_json(value: Any) -> Any:
    """Strict JSON: non-finite floats (an unchanged image has infinite PSNR) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "sreval": _version("sreval"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
    for pkg in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx2torch", "numpy"):
        v = _version(pkg)
        if v:
            env[pkg] = v
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def metric_conventions(scale: int, *, quantize_lr: bool = True, reference: str | None = None) -> dict[str, Any]:
    conv: dict[str, Any] = {
        "psnr": "Y channel of MATLAB rgb2ycbcr (BT.601 studio range), peak 255; *_rgb on RGB",
        "ssim": "Y channel, Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03",
        "shave_sr": scale,
        "shave_lr": 0,
        "sr_output": "clipped to [0, 1] and rounded to 8 bits before measuring",
        "lr_attacked": "rounded to 8 bits, kept within the budget" if quantize_lr else "not quantized",
        "averaging": "PSNR per image, then the mean over images",
        PSNR_LR: "attacked LR vs clean LR",
        PSNR_SR: "SR of attacked LR vs SR of clean LR (attack rows); SR vs HR (attack 'none')",
        PSNR_HR: "SR of attacked LR vs HR ground truth",
    }
    if reference:
        conv["reference"] = reference
    return conv


# Row keys that split a summary beyond (attack, alpha): a sweep's merged rows carry model and dataset.
SUMMARY_KEYS = ("group", "model", "dataset")


def summarize(rows: Sequence[Row]) -> list[SummaryRow]:
    """Means per (attack, alpha, and any `group`/`model`/`dataset` key) over images, with n;
    non-finite skipped."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.get("attack"), r.get("alpha")) + tuple(r.get(k) for k in SUMMARY_KEYS), []).append(r)
    out = []
    for (attack, alpha, *extra), rs in groups.items():
        entry: dict[str, Any] = {"attack": attack, "alpha": alpha, "n": len(rs)}
        entry.update({k: v for k, v in zip(SUMMARY_KEYS, extra) if v is not None})
        for m in METRICS:
            vals = [r[m] for r in rs if isinstance(r.get(m), (int, float))]  # type: ignore[literal-required]
            fin = [v for v in vals if math.isfinite(v)]
            if vals:
                entry[m] = sum(fin) / len(fin) if fin else math.inf
        if any("converged" in r for r in rs):  # the converged `strongest`: how many of n converged
            entry["n_converged"] = sum(bool(r.get("converged")) for r in rs)
        out.append(entry)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


# A cell starting with one of these is a formula to a spreadsheet (CSV injection): it is written
# with a leading apostrophe, as spreadsheets expect for text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as results.csv holds it: text neutralised where a spreadsheet would run it,
    non-finite numbers (an unchanged image's PSNR) empty."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def rows_csv(rows: Iterable[Row]) -> str:
    """The rows' scalar fields as CSV: every text field quoted (so a comma, quote, CR or
    newline in an image name stays inside its cell), numbers bare, formulas neutralised."""
    rows = list(rows)
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n",
                       quoting=csv.QUOTE_NONNUMERIC)
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(v) for k, v in r.items() if k in keys})
    return buf.getvalue()


def write_report(
    out_dir: Path | None,
    *,
    kind: str,
    command: str,
    model: dict[str, Any] | None,
    data: dict[str, Any] | None,
    config: dict[str, Any],
    environment: dict[str, Any],
    conventions: dict[str, Any],
    results: Sequence[Row],
    sections: dict[str, Any] | None = None,
) -> Report:
    """The report, validated against the shipped schema; written as report.json + results.csv
    in `out_dir` (None: not written)."""
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "model": model,
        "data": data,
        "config": config,
        "environment": environment,
        "conventions": conventions,
        "results": list(results),
        "summary": summarize(results),
    }
    report.update(sections or {})
    report = clean_json(report)
    errors = schema_errors(report)
    if errors:  # a bug of ours, not the user's input: said in one line all the same
        raise DataError(f"the {kind} report breaks its schema {SCHEMA}: {errors[0]}")
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_many({out_dir / "results.csv": rows_csv(report["results"]),
                           out_dir / "report.json": json.dumps(report, indent=2, allow_nan=False) + "\n"})
    return report  # type: ignore[return-value]


# ----------------------------------------------------------------------------- reading


def read_json(path: Path, schema: str | Sequence[str], what: str, missing: str,
              validate: Callable[[Any], list[str]] | None = None) -> dict[str, Any]:
    """A JSON file of ours, checked for its schema name (and, with `validate`, all the way
    down); every failure is one DataError line."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{path}: not a readable {what} ({str(e)[:200]})") from None
    names = (schema,) if isinstance(schema, str) else tuple(schema)
    if not isinstance(data, dict) or data.get("schema") not in names:
        raise DataError(f"{path}: not an sreval {what} (schema {' or '.join(names)} expected)")
    errors = validate(data) if validate is not None else []
    if errors:
        raise DataError(f"{path}: a damaged {what} ({errors[0]})")
    return data


def read_report(path: Path) -> Report:
    """report.json (or the folder holding it), validated against the report schema."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    return read_json(p, READABLE, "report", f"no report at {p}", validate=schema_errors)  # type: ignore[return-value]


J = TypeVar("J", bound=Callable[..., Any])


def claims_out_dir(job: J) -> J:
    """A job that writes into `out` (when given): check it can (a file in the way, read-only, a
    name too long, no space) BEFORE any work, and hold its lock while the job runs, so two runs
    never mix."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("out") is None:
            return job(*args, **kwargs)
        with claim_run_dir(Path(kwargs["out"])):
            return job(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- what every report holds


def data_info(spec: str | Path, samples: list[Sample]) -> dict[str, Any]:
    made = [s.name for s in samples if s.lr_made]
    lr = "read" if not made else "generated" if len(made) == len(samples) else "mixed"
    info = {"spec": str(spec), "n_images": len(samples), "images": [s.name for s in samples],
            "has_hr": all(s.hr is not None for s in samples), "lr": lr}
    if made:
        info["lr_note"] = ("LR generated from the HR images with MATLAB's imresize(HR, 1/scale, 'bicubic') "
                           "on 8-bit values" + ("" if lr == "generated" else f" for {', '.join(made)}"))
    return info


def model_info(model: SRModel, parity: Any = None) -> dict[str, Any]:
    info = model.describe()
    if parity is not None:
        info["parity"] = {"max_diff": parity.max_diff, "tol": parity.tol, "grad_l1": parity.grad_l1,
                          "rms_diff": parity.rms_diff, "rms_tol": parity.rms_tol if math.isfinite(parity.rms_tol) else None, "precision": parity.precision}
    return info
