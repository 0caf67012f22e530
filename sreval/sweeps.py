"""Sweeps: the grid models x datasets x attacks, every budget per cell, cached cell by cell.

A cell is one (attack, model, dataset) with all budgets (transfer: all models at once;
targeted: one model on the foreman pair). Its result is the report the job writes, kept in
RUN_DIR/cells/<key>/ (`sreval.cells`: staged, committed with checksums, recomputed when
damaged). The key hashes what decides the numbers: the models' SHA-256, the data's content,
the job's configuration and the sreval code. This module plans the grid (the cells and their
data, cropped once per scale) and runs it with an executor (`sreval.executors`: local or Ray).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sreval.attacks.targeted import foreman_frames, require_file
from sreval.cells import CELLS, cell_state, clear_staging, code_version, commit, merge, write_plan
from sreval.config import PAPER_ALPHAS as PAPER_BUDGETS, SweepConfig, parse_alpha
from sreval.conventions import Meta
from sreval.data import (EMBEDDED_FILES, EMBEDDED_NAMES, IMAGE_SUFFIXES, LR_MADE_MARKER, crop_center, embedded_dir,
                         load_dataset, resolve_path)
from sreval.errors import ConfigError
from sreval.executors import EXECUTORS, Outcome, Progress, RunOptions, SweepError, job_key, run_cell
from sreval.files import claim_run_dir, sha256_file
from sreval.graphstats import graph_stats
from sreval.io import read_image, write_image
from sreval.model import SRModel
from sreval.registry import attack_entry
from sreval.report import Report
from sreval.zoo import resolve_model_path

PAPER_ALPHAS = tuple(parse_alpha(PAPER_BUDGETS))  # as floats



# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ModelRef:
    """A model as the sweep knows it: what the job gets (spec), its identity and Table 1 facts."""

    spec: str
    name: str
    sha256: str
    scale: int
    params: int | None = None
    conv_layers: int | None = None
    gan_trained: bool | None = None


@dataclass(frozen=True)
class Cell:
    key: str
    attack: str
    models: tuple[ModelRef, ...]
    dataset: str  # label: the dataset as given (a folder's name)
    data: str | tuple[str, str]  # what the job reads: the spec as given, the cropped folder, or an image pair
    data_id: str
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def model(self) -> str:
        return ", ".join(m.name for m in self.models)

    @property
    def scale(self) -> int:
        return self.models[0].scale

    def describe(self) -> Report:
        return {"key": self.key, "attack": self.attack, "model": self.model,
                "models": [asdict(m) for m in self.models], "dataset": self.dataset, "data_id": self.data_id,
                "config": self.config, "dir": f"{CELLS}/{self.key}"}


def open_model_ref(spec: str) -> ModelRef:
    """Identity, scale and size of a model, without converting it (cheap)."""
    m = SRModel(resolve_model_path(spec), device="cpu")
    meta = m.metadata
    params, convs = meta.get(Meta.PARAMS), meta.get(Meta.CONV_LAYERS)
    if params is None or convs is None:  # a foreign file: count from its graph
        stats = graph_stats(m.proto)
        params, convs = stats.params, stats.conv_layers
    gan = meta.get(Meta.GAN_TRAINED)
    return ModelRef(spec=str(spec), name=meta.get(Meta.NAME, m.path.stem), sha256=m.sha256,
                    scale=m.conventions.scale, params=int(params), conv_layers=int(convs),
                    gan_trained=None if gan is None else gan == "1")


def cell_key(attack: str, models: Sequence[ModelRef], data_id: str, config: dict[str, Any],
             dataset: str) -> str:
    """A readable prefix and the hash of everything that decides the cell's numbers."""
    ident = {"attack": attack, "models": [m.sha256 for m in models], "data": data_id,
             "config": config, "sreval": code_version()}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    label = "+".join(m.name for m in models) if len(models) < 3 else f"{len(models)}models"
    return f"{attack}-{_safe(label)}-{_safe(dataset)}-{digest}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:40] or "x"


def _unique(refs: list[ModelRef]) -> list[ModelRef]:
    """Two models of one name (two files called model.onnx) get #2, #3: rows stay apart."""
    seen: dict[str, int] = {}
    out = []
    for r in refs:
        seen[r.name] = seen.get(r.name, 0) + 1
        out.append(r if seen[r.name] == 1 else replace(r, name=f"{r.name}#{seen[r.name]}"))
    return out


def plan_sweep(cfg: SweepConfig, run_dir: Path, *, data_root: Path | None = None) -> list[Cell]:
    """Every cell of the grid, with its key; opens models and data (no attack runs)."""
    refs = _unique([open_model_ref(m) for m in cfg.models])
    prep = _DataPrep(cfg, Path(run_dir), data_root)
    cells: list[Cell] = []
    for attack in cfg.attacks:
        config = job_key(cfg, attack)
        entry = attack_entry(attack)
        if not entry.dataset:  # its own image pair (targeted: the foreman frames)
            groups = [((r,), "foreman", prep.foreman(r.scale)) for r in refs]
        elif not entry.per_model:  # one cell for all models (transfer)
            _one_scale(refs)
            groups = [(tuple(refs), d, prep.dataset(d, refs[0].scale)) for d in cfg.datasets]
        else:
            groups = [((r,), d, prep.dataset(d, r.scale)) for d in cfg.datasets for r in refs]
        for models, spec, (data, data_id) in groups:
            label = dataset_label(spec)
            cells.append(Cell(cell_key(attack, models, data_id, config, label), attack, models,
                              label, data, data_id, config))
    return cells


def dataset_label(spec: str) -> str:
    """A dataset's name in tables: the name as given, or a folder's own name."""
    return Path(spec).name if ("/" in spec or os.sep in spec) else spec


def _one_scale(refs: Sequence[ModelRef]) -> None:
    if len({r.scale for r in refs}) > 1:
        listed = ", ".join(f"{r.name} x{r.scale}" for r in refs)
        raise ConfigError(f"transfer needs models of one scale, got {listed}")


class _DataPrep:
    """Resolves datasets once per scale: (what the job reads, content identity). With a crop
    the centre crops are written as an HR + LR_bicubic folder under RUN_DIR/data (8-bit PNG,
    lossless for 8-bit images), which every job then reads like any dataset."""

    def __init__(self, cfg: SweepConfig, run_dir: Path, data_root: Path | None):
        self.cfg, self.run_dir, self.data_root = cfg, run_dir, data_root
        self.done: dict[tuple[str, int], tuple[str, str]] = {}

    def dataset(self, spec: str, scale: int) -> tuple[str, str]:
        if (spec, scale) not in self.done:
            self.done[(spec, scale)] = self._prepare(spec, scale)
        return self.done[(spec, scale)]

    def _prepare(self, spec: str, scale: int) -> tuple[str, str]:
        if self.cfg.crop is None:
            ident = _data_identity(spec, self.data_root)
            return spec, _digest({"data": ident, "limit": self.cfg.limit, "scale": scale})
        samples = load_dataset(spec, scale, data_root=self.data_root, limit=self.cfg.limit)
        limit = f"-limit{self.cfg.limit}" if self.cfg.limit else ""
        # keyed by the source's content and written afresh: an image deleted from (or changed
        # in) the source never survives in the crops a resumed sweep reads
        source = _digest({"data": _data_identity(spec, self.data_root)})[:12]
        folder = self.run_dir / "data" / f"{_safe(Path(spec).name)}-x{scale}-crop{self.cfg.crop}{limit}-{source}"
        if folder.exists():
            shutil.rmtree(folder)
        write_crops(samples, scale, self.cfg.crop, folder)
        return str(folder), _digest({"data": _files_identity(folder), "scale": scale})

    def foreman(self, scale: int) -> tuple[tuple[str, str], str]:
        """The targeted attack's pair of image paths (source, target), and its identity."""
        src, tgt = (require_file(role, p) for role, p in zip(("source", "target"), foreman_frames()))
        if self.cfg.crop is not None:
            src, tgt = self._crop_pair(Path(src), Path(tgt), scale)
        ident = _digest({"source": sha256_file(Path(src)), "target": sha256_file(Path(tgt))})
        return (str(src), str(tgt)), ident

    def _crop_pair(self, src: Path, tgt: Path, scale: int) -> tuple[Path, Path]:
        side = self.cfg.crop * scale  # type: ignore[operator]
        folder = self.run_dir / "data" / f"foreman-x{scale}-crop{self.cfg.crop}"
        out = []
        for p in (src, tgt):
            img = read_image(p)
            h, w = min(side, img.shape[0] - img.shape[0] % scale), min(side, img.shape[1] - img.shape[1] % scale)
            write_image(folder / f"{p.stem}.png", crop_center(img, h, w))
            out.append(folder / f"{p.stem}.png")
        return out[0], out[1]


def write_crops(samples: Sequence[Any], scale: int, crop: int, folder: Path) -> None:
    """Centre crop of at most crop x crop LR pixels per sample, the HR pixels above it, in the
    EDSR layout (HR/, LR_bicubic/X<s>/); LR-only samples go to LR/."""
    for s in samples:
        h, w = min(crop, s.lr.shape[0]), min(crop, s.lr.shape[1])
        top, left = (s.lr.shape[0] - h) // 2, (s.lr.shape[1] - w) // 2
        lr = crop_center(s.lr, h, w)
        if s.hr is None:
            write_image(folder / "LR" / f"{s.name}.png", lr)
            continue
        hr = s.hr[top * scale:(top + h) * scale, left * scale:(left + w) * scale]
        write_image(folder / "HR" / f"{s.name}.png", hr)
        write_image(folder / "LR_bicubic" / f"X{scale}" / f"{s.name}x{scale}.png", lr)
    if any(s.lr_made and s.hr is not None for s in samples):
        (folder / "LR_bicubic" / f"X{scale}" / LR_MADE_MARKER).write_text(
            "these LR images were generated from the HR images (MATLAB-exact bicubic)\n")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _files_identity(folder: Path) -> str:
    """Content hash of every image file under a folder (names relative to it)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    return _digest([[str(p.relative_to(folder)), sha256_file(p)] for p in files])


def _data_identity(spec: str, data_root: Path | None) -> str:
    """What a dataset spec stands for, by content: the same images give the same cells."""
    if spec.strip().lower() in EMBEDDED_NAMES:
        folder = embedded_dir()  # the embedded photos live in scikit-image's wheel
        return _digest({"embedded": [[f, sha256_file(folder / f)] for f in EMBEDDED_FILES]})
    path = resolve_path(spec, data_root)  # raises DataError naming where it looked
    return sha256_file(path) if path.is_file() else _files_identity(path)


# ----------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    report: Report
    outcomes: list[Outcome]
    repaired: list[str] = field(default_factory=list)  # damaged cells found and recomputed

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def run_sweep(
    cfg: SweepConfig,
    run_dir: Path,
    *,
    executor: str = "local",
    device: str = "auto",
    data_root: Path | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Run every cell not yet done, then write RUN_DIR/report.json merging all cells. Raises
    SweepError after the merge when cells failed (the finished ones are kept)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    with claim_run_dir(Path(run_dir)):
        return _run_sweep(cfg, Path(run_dir), executor, device, data_root, progress)


def _run_sweep(cfg: SweepConfig, run_dir: Path, executor: str, device: str, data_root: Path | None,
               progress: Progress | None) -> SweepResult:
    clear_staging(run_dir)
    cells = plan_sweep(cfg, run_dir, data_root=data_root)
    write_plan(run_dir, asdict(cfg), [c.describe() for c in cells])
    states = {c.key: cell_state(run_dir, c.key) for c in cells}
    repaired = [f"{c.attack} / {c.model} / {c.dataset}: {states[c.key][1]}; recomputed"
                for c in cells if states[c.key][0] == "bad"]
    outcomes = {c.key: Outcome(c, "cached" if states[c.key][0] == "done" else "pending") for c in cells}
    todo = [c for c in cells if outcomes[c.key].status == "pending"]
    base = len(cells) - len(todo)
    if progress:
        progress(base, len(cells))
    opts = RunOptions(device=device, data_root=str(data_root) if data_root else None)
    try:
        EXECUTORS[executor](todo, cfg, run_dir, opts, lambda o: outcomes.__setitem__(o.cell.key, o),
                            progress, base, len(cells))
    finally:  # also on Ctrl-C: the merged report shows what is done so far
        done = {k: {"outcome": o.status, **({"error": o.error} if o.error else {})} for k, o in outcomes.items()}
        report = merge(run_dir, [c.describe() for c in cells], asdict(cfg), device, done, repaired)
    result = SweepResult(run_dir, report, list(outcomes.values()), repaired)
    failed = [o for o in result.outcomes if o.status == "failed"]
    if failed:
        first = failed[0]
        raise SweepError(f"{len(failed)} of {len(cells)} cells failed (the others are in {run_dir}); "
                         f"first: {first.cell.attack} / {first.cell.model} / {first.cell.dataset}: {first.error}")
    return result


# ----------------------------------------------------------------------------- sweeps


def sweep(
    models: Sequence[str] | str, data: Sequence[str] | str = "Set5", *, attacks: Sequence[str] | str = "basic",
    alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50, reference: str = "auto", quantize: bool = True,
    out: Path | None = None, crop: int | None = None, limit: int | None = None, batch: int | None = None,
    index_samples: int = 1024, defenses: Sequence[str] | str = "resize,self-ensemble", keep_images: int = 1,
    executor: str = "local", method: str = "ifgsm", norm: str = "linf", data_root: Path | None = None,
    device: str = "auto", seed: int = 0, progress: Callable[[float, float], None] | None = None,
    effort: str = "standard",
) -> Report:
    """`sreval sweep`: every (attack, model, dataset) cell with all budgets, cached cell by cell
    in `out` (without `out`, in a temporary folder that is removed afterwards); returns the
    merged report. The cells' outcomes are `sreval.sweeps.run_sweep`'s."""
    cfg = SweepConfig(models=models, datasets=data, attacks=attacks,  # type: ignore[arg-type] - normalised there
                      alphas=tuple(parse_alpha(alpha, norm)), steps=steps, reference=reference, quantize=quantize,
                      limit=limit, crop=crop, seed=seed, batch=batch, index_samples=index_samples,
                      defenses=defenses, keep_images=keep_images, method=method, norm=norm, effort=effort)
    if out is not None:
        return run_sweep(cfg, Path(out), executor=executor, device=device, data_root=data_root,
                         progress=progress).report
    with tempfile.TemporaryDirectory(prefix="sreval-sweep-") as tmp:
        return run_sweep(cfg, Path(tmp), executor=executor, device=device, data_root=data_root,
                         progress=progress).report



__all__ = ["SweepConfig", "SweepResult", "SweepError", "Cell", "ModelRef", "Outcome", "EXECUTORS", "PAPER_ALPHAS",
           "plan_sweep", "run_sweep", "sweep", "run_cell", "cell_key", "commit", "clear_staging", "write_crops", "open_model_ref"]
