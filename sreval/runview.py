"""A run folder read back, as `sreval report`, `sreval check`, the findings and the golden tests
see it: a sweep (its merged report, merged again from its cells if missing) or a single job's
folder, as cells of rows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sreval.cells import PLAN, merge
from sreval.conventions import Meta
from sreval.errors import DataError
from sreval.report import STANDARD_KEYS, Report, Row, read_report


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
    root: Path | None = None  # the run folder: no file outside it is read (default: `folder`)

    def file(self, *parts: str | Path) -> Path | None:
        """A file of this cell, or None where the path (from the run's JSON: a cell's folder, a
        file or image name) would leave the run folder: a report embeds nothing from elsewhere."""
        root = (self.root or self.folder).resolve()
        path = self.folder.joinpath(*parts).resolve()
        return path if path.is_relative_to(root) else None

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
    report: Report
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
    if report_kind(report) == "sweep":
        return _sweep_view(run_dir, report)
    return _single_view(run_dir, report)


def _sweep_view(run_dir: Path, report: Report) -> RunView:
    entries = (report.get("sweep") or {}).get("cells") or []
    rows_by_cell: dict[str, list[Row]] = {}
    for r in report.get("results", []):
        rows_by_cell.setdefault(r.get("cell", ""), []).append(r)
    cells = [CellView(e["attack"], e["model"], e["dataset"], rows_by_cell.get(e["key"], []),
                      e.get("sections") or {}, run_dir / str(e["dir"]), e.get("data") or {}, e.get("config") or {},
                      run_dir)
             for e in entries if e.get("status") == "done"]
    missing = [f"{e['attack']} / {e['model']} / {e['dataset']}" for e in entries if e.get("status") != "done"]
    conv = report.get("conventions") or {}
    models = list((report.get("model") or {}).get("models") or [])
    return RunView(run_dir, report, cells, models, conv, missing)


def report_kind(report: Report) -> str:
    """What made a report: stored since sreval.report/2; told from the command for /1."""
    if "kind" in report:
        return report["kind"]
    attack = {"attack": "basic", "evaluate": "clean"}.get(report.get("command", ""), report.get("command", "run"))
    return "defense" if attack == "basic" and "defense" in report else attack


def _single_view(run_dir: Path, report: Report) -> RunView:
    attack = report_kind(report)
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
