"""`sreval check RUN_DIR --golden FILE`: every number of a run against a golden file.

A golden file (schema sreval.golden/1) holds, per cell (attack | model | dataset), per row
(attack, image, budget and any group/source/target), every scalar number of the row. A check
compares them: PSNR values (dB) within `tol`; other numbers within the same tolerance as a
power ratio (relative 10**(tol/10) - 1, 2.3 % at 0.1 dB: what 0.1 dB means for an MSE);
yes/no values exactly; an infinite PSNR (null) only matches null. A golden cell, row or number
the run lacks is a regression; what the run has beyond the golden file is listed as new.

`--update` writes the golden file from the run instead: commit it together with the change
that moved the numbers, and say why in the commit message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sreval.errors import ConfigError, DataError
from sreval.files import atomic_write
from sreval.report import read_json
from sreval.runview import load_run

SCHEMA = "sreval.golden/1"
ROW_IDENTITY = ("attack", "image", "alpha", "group", "source", "target")
NOT_COMPARED = frozenset(ROW_IDENTITY) | {"model", "dataset", "cell"}
DIGITS = 6


@dataclass(frozen=True)
class Regression:
    cell: str
    row: str
    metric: str
    expected: Any
    got: Any
    why: str  # changed | missing cell | missing row | missing value

    def line(self) -> str:
        return (f"{self.cell} / {self.row} / {self.metric}: expected {_show(self.expected)}, "
                f"got {_show(self.got)} ({self.why})")


@dataclass(frozen=True)
class CheckResult:
    golden: Path
    tol: float
    compared: int
    regressions: list[Regression]
    new: list[str] = field(default_factory=list)  # cells / rows the golden file does not have
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions and self.compared > 0  # comparing nothing is no pass


def _show(v: Any) -> str:
    if v is None:
        return "inf"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def cell_label(attack: str, model: str, dataset: str) -> str:
    return f"{attack} | {model} | {dataset}"


def row_label(row: dict[str, Any]) -> str:
    parts = []
    for k in ROW_IDENTITY:
        v = row.get(k)
        if v is None:
            continue
        parts.append(f"{v * 255:.6g}/255" if k == "alpha" and isinstance(v, (int, float)) else str(v))
    return " | ".join(parts)


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    """The row's scalar numbers (null = an infinite PSNR); names, lists and dicts are not numbers."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in NOT_COMPARED:
            continue
        if isinstance(v, bool) or v is None:
            out[k] = v
        elif isinstance(v, (int, float)):
            out[k] = round(float(v), DIGITS) if math.isfinite(v) else None
    return out


def snapshot(run_dir: Path) -> dict[str, Any]:
    """{cell label: {row label: {metric: value}}} of a run folder (sweep or single job)."""
    run = load_run(Path(run_dir))
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for c in run.cells:
        rows = cells.setdefault(cell_label(c.attack, c.model, c.dataset), {})
        for r in c.rows:
            rows[row_label(r)] = _numbers(r)
    return {"cells": cells, "config": run.report.get("config") or {}}


def make_golden(run_dir: Path) -> dict[str, Any]:
    snap = snapshot(run_dir)
    return {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": str(run_dir), "config": snap["config"], "cells": snap["cells"]}


def write_golden(run_dir: Path, path: Path) -> dict[str, Any]:
    golden = make_golden(run_dir)
    if not golden["cells"]:
        raise DataError(f"{run_dir}: no finished cells to make a golden file from")
    atomic_write(Path(path), json.dumps(golden, indent=1, sort_keys=True) + "\n")
    return golden


def read_golden(path: Path) -> dict[str, Any]:
    """A golden file, checked all the way down: {cells: {cell: {row: {metric: number | bool | null}}}}
    with at least one number; anything else is one DataError line naming what is wrong."""
    golden = read_json(Path(path), SCHEMA, "golden file", f"no golden file at {path} (make one with --update)")
    cells = golden.get("cells")
    if not isinstance(cells, dict):
        raise DataError(f"{path}: malformed golden file: 'cells' must be an object")
    count = 0
    for cell, rows in cells.items():
        if not isinstance(rows, dict):
            raise DataError(f"{path}: malformed golden file: cell {cell!r} must map rows to numbers")
        for row, numbers in rows.items():
            if not isinstance(numbers, dict):
                raise DataError(f"{path}: malformed golden file: row {cell!r} / {row!r} must map metrics to numbers")
            for metric, v in numbers.items():
                if not (v is None or isinstance(v, (bool, int, float))) or (
                        isinstance(v, float) and not math.isfinite(v)):
                    raise DataError(f"{path}: malformed golden file: {cell!r} / {row!r} / {metric!r} is {v!r}, "
                                    f"not a number")
                count += not isinstance(v, bool) and v is not None
    if not count:
        raise DataError(f"{path}: the golden file holds no numbers: comparing nothing would pass anything")
    if not isinstance(golden.get("config", {}), dict):
        raise DataError(f"{path}: malformed golden file: 'config' must be an object")
    return golden


def _float(v: Any) -> float:
    """A number as a float; one too large for a float (a 400-digit integer) is infinite."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def within(metric: str, expected: Any, got: Any, tol: float) -> bool:
    if expected is None or got is None or isinstance(expected, bool) or isinstance(got, bool):
        return expected == got
    if expected == got:
        return True
    e, g = _float(expected), _float(got)
    if not (math.isfinite(e) and math.isfinite(g)):
        return False
    if "psnr" in metric:
        return abs(g - e) <= tol + 1e-9
    rel = 10 ** min(tol / 10, 300) - 1  # any tolerance past 3000 dB is as good as infinite
    return abs(g - e) <= rel * max(abs(e), abs(g)) + 1e-12


def check_run(run_dir: Path, golden_path: Path, *, tol: float = 0.1) -> CheckResult:
    """Compare every number of the run with the golden file."""
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"tolerance must be a number >= 0, got {tol!r}")
    snap = snapshot(run_dir)
    golden = read_golden(golden_path)
    regressions: list[Regression] = []
    compared = 0
    for cell, rows in golden["cells"].items():
        got_rows = snap["cells"].get(cell)
        if got_rows is None:
            regressions.append(Regression(cell, "-", "-", f"{len(rows)} rows", "nothing", "missing cell"))
            continue
        for row, numbers in rows.items():
            got = got_rows.get(row)
            if got is None:
                regressions.append(Regression(cell, row, "-", "a row", "nothing", "missing row"))
                continue
            for metric, expected in numbers.items():
                compared += 1
                if metric not in got:
                    regressions.append(Regression(cell, row, metric, expected, "nothing", "missing value"))
                elif not within(metric, expected, got[metric], tol):
                    regressions.append(Regression(cell, row, metric, expected, got[metric], "changed"))
    new = [c for c in snap["cells"] if c not in golden["cells"]]
    new += [f"{c} / {r}" for c, rows in snap["cells"].items() if c in golden["cells"]
            for r in rows if r not in golden["cells"][c]]
    notes = _config_notes(golden.get("config") or {}, snap["config"])
    return CheckResult(Path(golden_path), tol, compared, regressions, new, notes)


def _config_notes(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Configuration differences explain regressions; they are not regressions themselves."""
    keys = sorted(set(expected) | set(got))
    return [f"config {k}: golden {expected.get(k)!r}, run {got.get(k)!r}" for k in keys
            if expected.get(k) != got.get(k) and k not in ("models", "datasets")]


def summary_line(result: CheckResult) -> str:
    if result.ok:
        return f"ok: {result.compared} numbers within {result.tol:g} dB of {result.golden}"
    if not result.compared and not result.regressions:
        return f"no number of the run was compared with {result.golden}"
    return f"{len(result.regressions)} regression(s) against {result.golden} ({result.compared} numbers compared)"


__all__ = ["Regression", "CheckResult", "check_run", "make_golden", "write_golden", "read_golden", "snapshot",
           "within", "summary_line", "SCHEMA"]
