"""Running a sweep's cells: how each job of the registry runs as a cell (`cell_runner`) and what
of the sweep's configuration its numbers depend on (`job_key`); one cell run into its staging
folder (`run_cell`); and the executors that run many: `local` (in this process, one cell after
another) and `ray` (each cell a Ray task on the cluster at RAY_ADDRESS, or a local Ray
instance; one GPU per task where the cluster has GPUs). Ray workers need the models and the
data at the same paths; their cell folders come back to the driver, which alone writes RUN_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sreval.cells import commit, pack, staging_dir, unpack
from sreval.commands import attack, evaluate, index, partial, run_attack, targeted, transfer, universal
from sreval.config import STRONGEST, SweepConfig
from sreval.data import load_dataset
from sreval.errors import ConfigError, SrevalError
from sreval.files import atomic_write
from sreval.io import write_image
from sreval.registry import attack_entry
from sreval.report import Report

if TYPE_CHECKING:  # only described here
    from sreval.sweeps import Cell

Progress = Callable[[float, float], None]  # (cells done, with fractions; cells in all)


class SweepError(SrevalError):
    """One or more cells of a sweep failed (the others are kept)."""


# ----------------------------------------------------------------------------- how each job runs as a cell


CellRun = Callable[[SweepConfig, "Cell", dict[str, Any]], Report]


def _gradient_args(cfg: SweepConfig, attack: str) -> dict[str, Any]:
    return dict(alpha=list(cfg.alphas), steps=cfg.steps, reference=cfg.reference, quantize=cfg.quantize,
                loop=cfg.loop(attack))


def _attack_key(cfg: SweepConfig, attack: str) -> dict[str, Any]:
    return {"alphas": list(cfg.alphas), "steps": cfg.steps, "reference": cfg.reference, "quantize": cfg.quantize,
            "seed": cfg.seed, "batch": cfg.batch, "method": cfg.method_for(attack), "norm": cfg.norm,
            # what `strongest` runs (its members and their convergence) decides its numbers too
            **({"ensemble": list(STRONGEST), "effort": cfg.effort} if cfg.method_for(attack) == "strongest" else {})}


def _saving(cfg: SweepConfig) -> bool:
    return cfg.keep_images > 0


def _targeted_cell(cfg: SweepConfig, cell: "Cell", common: dict[str, Any]) -> Report:
    source, target = cell.data
    return targeted(cell.models[0].spec, source=source, target=target, alpha=list(cfg.alphas), steps=cfg.steps,
                    quantize=cfg.quantize, save_images=_saving(cfg), loop=cfg.loop("targeted"),
                    **{k: v for k, v in common.items() if k not in ("data_root", "limit")})


# How each of the paper's jobs runs as a sweep cell (`cfg` the sweep's configuration, `cell` the
# cell, `common` what every cell gets: out, device, seed, progress, data_root, limit). An entry
# of the registry that is only an attack object runs through run_attack.
CELL_RUNS: dict[str, CellRun] = {
    "clean": lambda cfg, cell, common: evaluate(cell.models[0].spec, cell.data, save_images=False, **common),
    "basic": lambda cfg, cell, common: attack(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                              batch=cfg.batch, method=cfg.method_for("basic"),
                                              **_gradient_args(cfg, "basic"), **common),
    "universal": lambda cfg, cell, common: universal(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                                     batch=cfg.batch, **_gradient_args(cfg, "universal"), **common),
    "partial": lambda cfg, cell, common: partial(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                                 batch=cfg.batch, **_gradient_args(cfg, "partial"), **common),
    "targeted": _targeted_cell,
    "transfer": lambda cfg, cell, common: transfer([m.spec for m in cell.models], cell.data, batch=cfg.batch,
                                                   **_gradient_args(cfg, "transfer"), **common),
    "index": lambda cfg, cell, common: index(cell.models[0].spec, cell.data, alpha=min(cfg.alphas),
                                             samples=cfg.index_samples, steps=cfg.steps, reference=cfg.reference,
                                             quantize=cfg.quantize, **common),
    "defense": lambda cfg, cell, common: attack(cell.models[0].spec, cell.data, defense=list(cfg.defenses),
                                                save_images=False, batch=cfg.batch, method=cfg.method_for("defense"),
                                                **_gradient_args(cfg, "defense"), **common),
}
# The part of the sweep configuration each job's numbers depend on (in the cell's cache key).
CELL_KEYS: dict[str, Callable[[SweepConfig], dict[str, Any]]] = {
    "clean": lambda cfg: {"seed": cfg.seed},
    "targeted": lambda cfg: {k: v for k, v in _attack_key(cfg, "targeted").items() if k != "reference"},
    "index": lambda cfg: {**_attack_key(cfg, "index"), "alphas": [min(cfg.alphas)], "samples": cfg.index_samples},
    "defense": lambda cfg: {**_attack_key(cfg, "defense"), "defenses": list(cfg.defenses)},
}


def cell_runner(name: str) -> CellRun:
    """How the registry's entry `name` runs as a sweep cell."""
    attack_entry(name)
    if name in CELL_RUNS:
        return CELL_RUNS[name]
    return lambda cfg, cell, common: run_attack(name, cell.models[0].spec, cell.data,
                                                **_gradient_args(cfg, name), **common)


def job_key(cfg: SweepConfig, name: str) -> dict[str, Any]:
    return CELL_KEYS[name](cfg) if name in CELL_KEYS else _attack_key(cfg, name)


# ----------------------------------------------------------------------------- running one cell


@dataclass(frozen=True)
class RunOptions:
    """How cells run (not part of their keys)."""

    device: str = "auto"
    data_root: str | None = None


def run_cell(cell: Cell, cfg: SweepConfig, out_dir: Path, opts: RunOptions,
             progress: Callable[[int, int], None] | None = None) -> Report:
    """Run one cell's job into out_dir (a staging folder); returns its report with a 'cell'
    section. Checks the job saw the very model the key was made for."""
    common = dict(out=out_dir, data_root=Path(opts.data_root) if opts.data_root else None,
                  limit=None if cfg.crop is not None else cfg.limit, device=opts.device, seed=cfg.seed,
                  progress=progress)
    report = cell_runner(cell.attack)(cfg, cell, common)
    _check_identity(cell, report)
    if cfg.keep_images:
        _prune_images(out_dir / "images", report, cfg.keep_images)
        _save_clean_lr(cell, cfg, out_dir / "images", opts)
    report["cell"] = cell.describe()
    atomic_write(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _check_identity(cell: Cell, report: Report) -> None:
    model = report.get("model") or {}
    seen = [m.get("sha256") for m in model.get("models", [model])]
    want = [m.sha256 for m in cell.models]
    if seen != want:
        raise SweepError(f"cell {cell.key}: the job opened another model file than planned "
                         f"(sha256 {', '.join(str(s)[:12] for s in seen)}); the file changed during the sweep?")


def _prune_images(folder: Path, report: Report, keep: int) -> None:
    """Keep the PNGs of the first `keep` images only: a sweep over BSD100 would otherwise
    store thousands of images that no figure shows."""
    if not folder.is_dir():
        return
    names = list((report.get("data") or {}).get("images") or [])
    kept = set(names[:keep])
    by_length = sorted(names, key=len, reverse=True)
    for f in folder.iterdir():
        owner = next((n for n in by_length if f.name.startswith(f"{n}_")), None)
        if owner is not None and owner not in kept:
            f.unlink()


def _save_clean_lr(cell: Cell, cfg: SweepConfig, folder: Path, opts: RunOptions) -> None:
    """The clean LR of the kept images (the jobs save attacked LR and SR only): Fig. 2's first column."""
    if cell.attack in ("targeted", "clean", "index"):
        return
    limit = min(cfg.keep_images, cfg.limit or cfg.keep_images)
    for s in load_dataset(cell.data, cell.scale, data_root=opts.data_root, limit=limit):
        write_image(folder / f"{s.name}_lr_clean.png", s.lr)


# ----------------------------------------------------------------------------- executors


@dataclass(frozen=True)
class Outcome:
    """What happened to a cell in this sweep: done (computed now), cached, failed or pending."""

    cell: Cell
    status: str = "pending"
    error: str | None = None


def _local(cells: list[Cell], cfg: SweepConfig, run_dir: Path, opts: RunOptions,
           finish: Callable[[Outcome], None], progress: Progress | None, base: int, total: int) -> None:
    for i, cell in enumerate(cells):
        staged = staging_dir(run_dir, cell.key)

        seen = [0.0]  # a job may report several passes (index: sampling, then the attack)

        def inner(done: int, n: int, _i: int = i, _seen: list[float] = seen) -> None:
            if progress and n:
                _seen[0] = max(_seen[0], min(done, n) / n)
                progress(base + _i + _seen[0], total)

        try:
            run_cell(cell, cfg, staged, opts, inner)
            commit(run_dir, cell.key, staged)
            finish(Outcome(cell, "done"))
        except Exception as e:  # noqa: BLE001 - one cell's torch error must not cost the sweep
            if _interrupted(e):
                raise KeyboardInterrupt from e
            if os.environ.get("SREVAL_DEBUG") and not isinstance(e, SrevalError):
                raise
            why = str(e) if isinstance(e, SrevalError) else f"{type(e).__name__}: {_first_line(e)}"
            finish(Outcome(cell, "failed", why))
        finally:
            shutil.rmtree(staged, ignore_errors=True)


def _interrupted(e: BaseException) -> bool:
    """Ctrl-C that landed inside a C call can surface as a SystemError ("returned a result
    with an exception set") whose cause is the KeyboardInterrupt: still an interrupt."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _remote_cell(cell: Cell, cfg: SweepConfig, opts: RunOptions) -> Report:
    """A Ray task: the cell in a local scratch folder, returned as bytes (or its error)."""
    with tempfile.TemporaryDirectory(prefix="sreval-cell-") as tmp:
        try:
            run_cell(cell, cfg, Path(tmp), opts)
        except SrevalError as e:
            return {"error": str(e)}
        return {"files": pack(Path(tmp))}


def _ray(cells: list[Cell], cfg: SweepConfig, run_dir: Path, opts: RunOptions,
         finish: Callable[[Outcome], None], progress: Progress | None, base: int, total: int) -> None:
    try:
        import ray
    except ImportError:  # an optional extra
        raise ConfigError("the ray executor needs Ray: install the ray extra of sreval, or pip install ray") from None
    if not ray.is_initialized():
        # address None: RAY_ADDRESS if set, else a new local instance
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    gpus = ray.cluster_resources().get("GPU", 0) >= 1
    if gpus and opts.device == "auto":
        opts = replace(opts, device="cuda")
    task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=0)(_remote_cell)
    pending = {task.remote(c, cfg, opts): c for c in cells}
    done = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            _collect(ray, ready[0], cell, run_dir, finish)
            done += 1
            if progress:
                progress(base + done, total)
    finally:
        for ref in pending:  # Ctrl-C or an error here: do not leave the cluster busy
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass


def _collect(ray: Any, ref: Any, cell: Cell, run_dir: Path, finish: Callable[[Outcome], None]) -> None:
    try:
        result = ray.get(ref)
    except Exception as e:  # a crash of the worker or a bug: Ray's error names it
        lines = str(e).strip().splitlines()  # Ray's message ends with the worker's error
        finish(Outcome(cell, "failed", f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"))
        return
    if "error" in result:
        finish(Outcome(cell, "failed", result["error"]))
        return
    staged = staging_dir(run_dir, cell.key)
    try:
        unpack(result["files"], staged)
        commit(run_dir, cell.key, staged)
        finish(Outcome(cell, "done"))
    finally:
        shutil.rmtree(staged, ignore_errors=True)


EXECUTORS = {"local": _local, "ray": _ray}


__all__ = ["SweepError", "Outcome", "RunOptions", "EXECUTORS", "cell_runner", "job_key", "run_cell", "Progress"]
