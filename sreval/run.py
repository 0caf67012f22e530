"""A run on disk, the one home of what a run writes and what is read back from it.

* A report: report.json (schema sreval.report/1) and results.csv, written atomically and
  together (`sreval.files`), so a crash never leaves a file that looks complete; what every
  command's report holds about the model and the data (`model_info`, `data_info`).
* A sweep folder: its plan (sweep.json, written before any cell runs), its cells
  (RUN_DIR/cells/<key>/, each a job's report, done exactly when its checksum file lists its
  files with the right SHA-256) and the merged report of all finished cells.
* `load_run`: a run folder (sweep or single job) as the cells that `sreval report`,
  `sreval check` and the golden tests read.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import platform
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from sreval.conventions import Meta
from sreval.errors import DataError, SrevalError
from sreval.files import atomic_write, atomic_write_many, claim_run_dir, sha256_file

if TYPE_CHECKING:  # only described here
    from sreval.data import Sample
    from sreval.model import SRModel

PLAN = "sweep.json"
PLAN_SCHEMA = "sreval.sweeps/1"
CELLS = "cells"
CHECKSUMS = "cell.sha256.json"
Row = dict[str, Any]


# ----------------------------------------------------------------------------- a report


SCHEMA = "sreval.report/1"
METRICS = ("psnr_lr", "psnr_sr", "psnr_lr_rgb", "psnr_sr_rgb", "psnr_hr", "ssim_hr", "ssim_sr")


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
        "psnr_lr": "attacked LR vs clean LR",
        "psnr_sr": "SR of attacked LR vs SR of clean LR (attack rows); SR vs HR (attack 'none')",
        "psnr_hr": "SR of attacked LR vs HR ground truth",
    }
    if reference:
        conv["reference"] = reference
    return conv


# Row keys that split a summary beyond (attack, alpha): a sweep's merged rows carry model and dataset.
SUMMARY_KEYS = ("group", "model", "dataset")


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per (attack, alpha, and any `group`/`model`/`dataset` key) over images, with n;
    non-finite skipped."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("attack"), r.get("alpha")) + tuple(r.get(k) for k in SUMMARY_KEYS), []).append(r)
    out = []
    for (attack, alpha, *extra), rs in groups.items():
        entry: dict[str, Any] = {"attack": attack, "alpha": alpha, "n": len(rs)}
        entry.update({k: v for k, v in zip(SUMMARY_KEYS, extra) if v is not None})
        for m in METRICS:
            vals = [r[m] for r in rs if isinstance(r.get(m), (int, float))]
            fin = [v for v in vals if math.isfinite(v)]
            if vals:
                entry[m] = sum(fin) / len(fin) if fin else math.inf
        out.append(entry)
    return out


def rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return buf.getvalue()


def write_report(
    out_dir: Path | None,
    *,
    command: str,
    model: dict[str, Any] | None,
    data: dict[str, Any] | None,
    config: dict[str, Any],
    environment: dict[str, Any],
    conventions: dict[str, Any],
    results: Sequence[dict[str, Any]],
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report; written as report.json + results.csv in `out_dir` (None: not written)."""
    report: dict[str, Any] = {
        "schema": SCHEMA,
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
    if out_dir is None:
        return report
    out_dir = Path(out_dir)
    atomic_write_many({out_dir / "results.csv": rows_csv(report["results"]),
                       out_dir / "report.json": json.dumps(report, indent=2, allow_nan=False) + "\n"})
    return report


def read_json(path: Path, schema: str, what: str, missing: str) -> dict[str, Any]:
    """A JSON file of ours, checked for its schema; every failure is one DataError line."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable {what} ({e})") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        raise DataError(f"{path}: not an sreval {what} (schema {schema} expected)")
    return data


def read_report(path: Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    return read_json(p, SCHEMA, "report", f"no report at {p}")


J = TypeVar("J", bound=Callable[..., dict[str, Any]])


def claims_out_dir(job: J) -> J:
    """A job that writes into `out` (when given): check it can (a file in the way, read-only, a
    name too long, no space) BEFORE any work, and hold its lock while the job runs, so two runs
    never mix."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if kwargs.get("out") is None:
            return job(*args, **kwargs)
        with claim_run_dir(Path(kwargs["out"])):
            return job(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
        info["parity"] = {"max_diff": parity.max_diff, "tol": parity.tol, "grad_l1": parity.grad_l1}
    return info


# ----------------------------------------------------------------------------- a sweep folder


# Modules that only present results: editing them leaves every cached number valid.
PRESENTATION = frozenset({"cli.py", "htmlreport.py", "figures.py", "check.py", "demo.py"})


def code_version() -> str:
    """The package version and a hash of the code that computes numbers: during development
    the version stays put while the attacks change, and a cache keyed on the version alone
    would hand back numbers the current code no longer produces."""
    try:
        version = metadata.version("sreval")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+{_source_digest()[:12]}"


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if f.name not in PRESENTATION or f.parent != root:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def cell_dir(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / CELLS / key


def cell_state(run_dir: Path, key: str) -> tuple[str, str | None]:
    """('done' | 'missing' | 'bad', why bad): a cell is done only when its checksum file
    lists every file of its folder with the right SHA-256 and its report.json is a report of
    this very cell. A truncated, edited or foreign cell is 'bad' and gets recomputed."""
    folder = cell_dir(run_dir, key)
    if not folder.exists():
        return "missing", None
    try:
        listed = json.loads((folder / CHECKSUMS).read_text())["files"]
        present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS}
        if not isinstance(listed, dict) or set(listed) != present or "report.json" not in listed:
            return "bad", "its files are not the ones it was written with"
        for rel, digest in listed.items():
            if sha256_file(folder / rel) != digest:
                return "bad", f"{rel} changed after it was written"
        report = read_report(folder)
    except (OSError, ValueError, KeyError, TypeError, SrevalError) as e:
        return "bad", f"unreadable ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    if (report.get("cell") or {}).get("key") != key:
        return "bad", "its report is not this cell's"
    return "done", None


def is_done(run_dir: Path, key: str) -> bool:
    return cell_state(run_dir, key)[0] == "done"


def write_plan(run_dir: Path, config: dict[str, Any], cells: Sequence[dict[str, Any]]) -> None:
    """The sweep's plan (its configuration and every cell, described), before any cell runs."""
    plan = {"schema": PLAN_SCHEMA, "config": config, "sreval": code_version(), "cells": list(cells)}
    atomic_write(Path(run_dir) / PLAN, json.dumps(plan, indent=2) + "\n")


def merge(run_dir: Path, cells: Sequence[dict[str, Any]] | None = None, config: dict[str, Any] | None = None,
          device: str = "auto", outcomes: Mapping[str, dict[str, Any]] | None = None,
          repaired: Sequence[str] = ()) -> dict[str, Any]:
    """RUN_DIR/report.json from every finished cell: rows gain model, dataset and cell; each
    cell's own sections stay with it under sweep.cells. Without cells/config, read the plan.
    `outcomes` (per cell key: outcome done | cached | failed | pending, and the error) and
    `repaired` (damaged cells recomputed) say what the last sweep did."""
    run_dir = Path(run_dir)
    plan = read_plan(run_dir)
    described = list(cells) if cells is not None else plan["cells"]
    config = config if config is not None else plan["config"]
    rows: list[dict[str, Any]] = []
    entries, conventions, models = [], {}, {}
    for c in described:
        entry = {k: c[k] for k in ("key", "attack", "model", "dataset", "dir")} | dict((outcomes or {}).get(c["key"], {}))
        for m in c["models"]:
            models.setdefault(m["name"], m)
        if not is_done(run_dir, c["key"]):
            entries.append({**entry, "status": "missing"})
            continue
        rep = read_report(cell_dir(run_dir, c["key"]))
        rows += [{**r, "model": r.get("model", c["model"]), "dataset": c["dataset"], "cell": c["key"]}
                 for r in rep.get("results", [])]
        conventions.setdefault(c["attack"], rep.get("conventions"))
        entries.append({**entry, "status": "done", "n_rows": len(rep.get("results", [])),
                        "data": rep.get("data"), "config": rep.get("config"),
                        "sections": {k: v for k, v in rep.items() if k not in STANDARD_KEYS}})
    complete = all(e["status"] == "done" for e in entries)
    return write_report(
        run_dir, command="sweep", model={"name": ", ".join(models), "models": list(models.values())},
        data={"datasets": list(dict.fromkeys(c["dataset"] for c in described))},
        config=config, environment=environment(device), conventions=conventions, results=rows,
        sections={"sweep": {"complete": complete, "cells": entries, "sreval": code_version(), "repaired": list(repaired)}},
    )


# Keys every report has; anything else in a cell's report is a feature's own section.
STANDARD_KEYS = frozenset({"schema", "created", "command", "model", "data", "config", "environment",
                           "conventions", "results", "summary", "cell"})


def read_plan(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / PLAN, PLAN_SCHEMA, "sweep plan", f"{run_dir}: not a sweep folder (no {PLAN})")


# ----------------------------------------------------------------------------- reading a run back


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite numbers (None = infinite PSNR in JSON: an unchanged image)."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def nearest(alphas: Sequence[float], target: float) -> float | None:
    """The budget closest to `target` on a log scale (None when there is none)."""
    return min(alphas, key=lambda a: abs(math.log(a / target))) if alphas else None


@dataclass(frozen=True)
class CellView:
    """One job's results: an attack on a model (or several) over a dataset."""

    attack: str
    model: str
    dataset: str
    rows: list[Row]
    sections: dict[str, Any]
    folder: Path  # where its images and files are
    data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def alphas(self) -> list[float]:
        return sorted({r["alpha"] for r in self.rows if isinstance(r.get("alpha"), (int, float)) and r["alpha"] > 0})

    @property
    def first_image(self) -> str | None:
        names = self.data.get("images") or [r.get("image") for r in self.rows]
        return names[0] if names else None


@dataclass(frozen=True)
class RunView:
    run_dir: Path
    report: dict[str, Any]
    cells: list[CellView]
    models: list[dict[str, Any]]  # name, params, conv_layers, gan_trained, scale, sha256
    conventions: dict[str, dict[str, Any]]  # attack -> conventions
    missing: list[str]  # cells planned but not finished

    def of(self, attack: str) -> list[CellView]:
        return [c for c in self.cells if c.attack == attack]

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(c.dataset for c in self.cells))

    @property
    def model_names(self) -> list[str]:
        return [m["name"] for m in self.models]


def load_run(run_dir: Path) -> RunView:
    """A sweep folder (merged report.json, merged again from its cells if missing) or a
    single job's folder / report.json."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise DataError(f"no run folder at {run_dir}")
    if (run_dir / PLAN).is_file() and not (run_dir / "report.json").is_file():
        merge(run_dir)
    report = read_report(run_dir)
    if report.get("command") == "sweep":
        return _sweep_view(run_dir, report)
    return _single_view(run_dir, report)


def _sweep_view(run_dir: Path, report: dict[str, Any]) -> RunView:
    entries = (report.get("sweep") or {}).get("cells") or []
    rows_by_cell: dict[str, list[Row]] = {}
    for r in report.get("results", []):
        rows_by_cell.setdefault(r.get("cell", ""), []).append(r)
    cells = [CellView(e["attack"], e["model"], e["dataset"], rows_by_cell.get(e["key"], []),
                      e.get("sections") or {}, run_dir / e["dir"], e.get("data") or {}, e.get("config") or {})
             for e in entries if e.get("status") == "done"]
    missing = [f"{e['attack']} / {e['model']} / {e['dataset']}" for e in entries if e.get("status") != "done"]
    conv = report.get("conventions") or {}
    models = list((report.get("model") or {}).get("models") or [])
    return RunView(run_dir, report, cells, models, conv, missing)


JOB_ATTACK = {"attack": "basic", "evaluate": "clean"}


def _single_view(run_dir: Path, report: dict[str, Any]) -> RunView:
    attack = JOB_ATTACK.get(report.get("command", ""), report.get("command", "run"))
    if attack == "basic" and "defense" in report:
        attack = "defense"
    model = report.get("model") or {}
    data = report.get("data") or {}
    dataset = Path(str(data.get("spec") or data.get("source") or "data")).name
    rows = [{**r, "model": r.get("model", model.get("name", "model")), "dataset": dataset}
            for r in report.get("results", [])]
    cell = CellView(attack, model.get("name", "model"), dataset, rows,
                    {k: v for k, v in report.items() if k not in STANDARD_KEYS | {"sweep"}}, run_dir, data,
                    report.get("config") or {})
    models = [_model_facts(m) for m in (model.get("models") or [model])]
    return RunView(run_dir, report, [cell], models, {attack: report.get("conventions") or {}}, [])


def _model_facts(info: dict[str, Any]) -> dict[str, Any]:
    meta = info.get("metadata") or {}

    def num(key: str) -> int | None:
        return int(meta[key]) if str(meta.get(key, "")).isdigit() else None

    gan = meta.get(Meta.GAN_TRAINED)
    return {"name": info.get("name", "model"), "scale": info.get("scale"), "sha256": info.get("sha256"),
            "params": num(Meta.PARAMS), "conv_layers": num(Meta.CONV_LAYERS),
            "gan_trained": None if gan is None else gan == "1"}
