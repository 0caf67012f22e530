"""Sweeps: the grid models x datasets x attacks, every budget per cell, cached cell by cell.

A cell is one (attack, model, dataset) with all budgets (transfer: all models at once;
targeted: one model on the foreman pair). Its result is the report the attack's job function
writes (schema sreval.report/1), kept in RUN_DIR/cells/<key>/. The key hashes what decides the
numbers: the models' SHA-256, the data's content, the attack's configuration and the sreval
version. A cell is computed in a staging folder and renamed into place when complete, so a
cell counts as done exactly when RUN_DIR/cells/<key>/report.json exists: an interrupted sweep
(Ctrl-C, crash, power loss) resumes without recomputing finished cells and never mistakes a
half-written one for a finished one.

Executors: `local` (in this process, one cell after another) and `ray` (each cell a Ray task
on the cluster at RAY_ADDRESS, or a local Ray instance; one GPU per task where the cluster has
GPUs). Ray workers need the models and the data at the same paths (zoo names resolve in their
own checkout); their cell folders come back to the driver, which alone writes RUN_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sreval.attacks.basic import BasicConfig, LoopOptions
from sreval.attacks.common import check_steps, parse_alpha
from sreval.attacks.targeted import foreman_frames, require_file
from sreval.commands import ATTACKS
from sreval.commands import PAPER_ALPHAS as PAPER_BUDGETS
from sreval.conventions import Meta
from sreval.data import EMBEDDED_FILES, EMBEDDED_NAMES, IMAGE_SUFFIXES, LR_MADE_MARKER, crop_center, embedded_dir, load_dataset, resolve_path
from sreval.defenses import parse_defenses
from sreval.errors import ConfigError, SrevalError
from sreval.files import atomic_write, claim_run_dir, sha256_file
from sreval.graphstats import graph_stats
from sreval.io import read_image, write_image
from sreval.model import SRModel
from sreval.run import CELLS, CHECKSUMS, cell_dir, cell_state, code_version, is_done, merge, write_plan
from sreval.zoo import resolve_model_path

PAPER_ALPHAS = tuple(parse_alpha(PAPER_BUDGETS))
STAGING_PREFIX = ".staging-"
Progress = Callable[[float, float], None]  # (cells done, with fractions; cells in all)


class SweepError(SrevalError):
    """One or more cells of a sweep failed (the others are kept)."""


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SweepConfig:
    """What decides the numbers of every cell (device, executor and paths do not)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...] = ("Set5",)
    attacks: tuple[str, ...] = ("basic",)
    alphas: tuple[float, ...] = PAPER_ALPHAS
    steps: int = 50
    reference: str = "auto"
    quantize: bool = True
    limit: int | None = None
    crop: int | None = None  # LR side of a centre crop of every image (HR cropped above it)
    seed: int = 0
    batch: int | None = None
    index_samples: int = 1024  # N_s of the robustness index (at the smallest budget)
    defenses: tuple[str, ...] = ("resize", "self-ensemble")
    keep_images: int = 1  # images per cell whose PNGs are kept for the report's figures
    method: str = "ifgsm"  # the shared loop's method; 'strongest' for basic cells (the others: ifgsm)
    norm: str = "linf"

    def __post_init__(self) -> None:
        for name in ("models", "datasets", "attacks", "defenses"):
            object.__setattr__(self, name, _names(getattr(self, name), name))
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas), self.norm)))
        check_steps(self.steps)
        BasicConfig(alphas=self.alphas, method=self.method, norm=self.norm)  # validates both
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"unknown attack(s) {', '.join(unknown)}: choose from {', '.join(ATTACKS)}")
        for a in self.attacks:
            if not ATTACKS[a].per_model and len(self.models) < 2:
                raise ConfigError(f"the {a} attack needs at least two models")
        for name in ("limit", "crop", "batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.index_samples, int) or self.index_samples < 1:
            raise ConfigError(f"index samples must be an integer >= 1, got {self.index_samples!r}")
        if not isinstance(self.keep_images, int) or self.keep_images < 0:
            raise ConfigError(f"keep_images must be an integer >= 0, got {self.keep_images!r}")
        if "defense" in self.attacks:
            object.__setattr__(self, "defenses", parse_defenses(list(self.defenses)))

    def attack_config(self, attack: str) -> dict[str, Any]:
        """The part of the configuration one attack's numbers depend on (goes into its key)."""
        return ATTACKS[attack].cell_key(self, attack)

    def method_for(self, attack: str) -> str:
        return self.method if self.method != "strongest" or attack == "basic" else "ifgsm"

    def loop(self, attack: str) -> LoopOptions:
        return LoopOptions(self.method_for(attack), self.norm)


def _names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not out and what != "defenses":
        raise ConfigError(f"no {what} given")
    return out


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
    data: str  # what the job reads: the spec as given, or the materialized (cropped) folder
    data_id: str
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def model(self) -> str:
        return ", ".join(m.name for m in self.models)

    @property
    def scale(self) -> int:
        return self.models[0].scale

    def describe(self) -> dict[str, Any]:
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
        config = cfg.attack_config(attack)
        entry = ATTACKS[attack]
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

    def foreman(self, scale: int) -> tuple[str, str]:
        """The targeted attack's pair (source, target) as 'source|target' paths."""
        src, tgt = (require_file(role, p) for role, p in zip(("source", "target"), foreman_frames()))
        if self.cfg.crop is not None:
            src, tgt = self._crop_pair(Path(src), Path(tgt), scale)
        ident = _digest({"source": sha256_file(Path(src)), "target": sha256_file(Path(tgt))})
        return f"{src}|{tgt}", ident

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


# ----------------------------------------------------------------------------- running one cell


@dataclass(frozen=True)
class RunOptions:
    """How cells run (not part of their keys)."""

    device: str = "auto"
    data_root: str | None = None


def run_cell(cell: Cell, cfg: SweepConfig, out_dir: Path, opts: RunOptions,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run one cell's job into out_dir (a staging folder); returns its report with a 'cell'
    section. Checks the job saw the very model the key was made for."""
    common = dict(out=out_dir, data_root=Path(opts.data_root) if opts.data_root else None,
                  limit=None if cfg.crop is not None else cfg.limit, device=opts.device, seed=cfg.seed,
                  progress=progress)
    report = ATTACKS[cell.attack].cell_runner(cell.attack)(cfg, cell, common)
    _check_identity(cell, report)
    if cfg.keep_images:
        _prune_images(out_dir / "images", report, cfg.keep_images)
        _save_clean_lr(cell, cfg, out_dir / "images", opts)
    report["cell"] = cell.describe()
    atomic_write(out_dir / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _check_identity(cell: Cell, report: dict[str, Any]) -> None:
    model = report.get("model") or {}
    seen = [m.get("sha256") for m in model.get("models", [model])]
    want = [m.sha256 for m in cell.models]
    if seen != want:
        raise SweepError(f"cell {cell.key}: the job opened another model file than planned "
                         f"(sha256 {', '.join(str(s)[:12] for s in seen)}); the file changed during the sweep?")


def _prune_images(folder: Path, report: dict[str, Any], keep: int) -> None:
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


# ----------------------------------------------------------------------------- the cache


def staging_dir(run_dir: Path, key: str) -> Path:
    root = Path(run_dir) / CELLS
    root.mkdir(parents=True, exist_ok=True)
    # the pid lets clear_staging tell a crashed sweep's leftovers from a live sweep's work
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{STAGING_PREFIX}{key}.{os.getpid()}."))


def commit(run_dir: Path, key: str, staged: Path) -> None:
    """Rename a complete staging folder into place (atomic); its report.json makes it done."""
    if not (staged / "report.json").is_file():
        raise SweepError(f"cell {key}: no report.json was written")
    final = cell_dir(run_dir, key)
    if is_done(run_dir, key):  # finished meanwhile by another sweep on this folder
        shutil.rmtree(staged, ignore_errors=True)
        return
    if final.exists():  # a damaged cell, left by hand or an old layout
        shutil.rmtree(final)
    files = {str(p.relative_to(staged)): sha256_file(p) for p in sorted(staged.rglob("*")) if p.is_file()}
    atomic_write(staged / CHECKSUMS, json.dumps({"files": files}, indent=1) + "\n")
    os.replace(staged, final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clear_staging(run_dir: Path) -> int:
    """Remove the staging folders of cells that never finished (crash, power loss), but not
    those of a sweep still running on this folder."""
    root = Path(run_dir) / CELLS
    stale = [p for p in root.glob(f"{STAGING_PREFIX}*") if p.is_dir() and not _alive(p)] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def _alive(staged: Path) -> bool:
    """Whether the process that made this staging folder still runs (this machine's pids)."""
    parts = staged.name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) == os.getpid():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def pack(folder: Path) -> dict[str, bytes]:
    """A cell folder as {relative path: bytes}, to bring it back from a remote worker."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], folder: Path) -> None:
    for rel, data in files.items():
        target = (folder / rel).resolve()
        if folder.resolve() not in target.parents:
            raise SweepError(f"a worker sent a file outside its cell folder: {rel}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


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


def _remote_cell(cell: Cell, cfg: SweepConfig, opts: RunOptions) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class SweepResult:
    run_dir: Path
    report: dict[str, Any]
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
) -> dict[str, Any]:
    """`sreval sweep`: every (attack, model, dataset) cell with all budgets, cached cell by cell
    in `out` (without `out`, in a temporary folder that is removed afterwards); returns the
    merged report. The cells' outcomes are `sreval.sweeps.run_sweep`'s."""
    cfg = SweepConfig(models=models, datasets=data, attacks=attacks,  # type: ignore[arg-type] - normalised there
                      alphas=tuple(parse_alpha(alpha, norm)), steps=steps, reference=reference, quantize=quantize,
                      limit=limit, crop=crop, seed=seed, batch=batch, index_samples=index_samples,
                      defenses=defenses, keep_images=keep_images, method=method, norm=norm)
    if out is not None:
        return run_sweep(cfg, Path(out), executor=executor, device=device, data_root=data_root,
                         progress=progress).report
    with tempfile.TemporaryDirectory(prefix="sreval-sweep-") as tmp:
        return run_sweep(cfg, Path(tmp), executor=executor, device=device, data_root=data_root,
                         progress=progress).report



__all__ = ["SweepConfig", "SweepResult", "SweepError", "Cell", "ModelRef", "Outcome", "EXECUTORS", "PAPER_ALPHAS",
           "plan_sweep", "run_sweep", "sweep", "run_cell", "cell_key", "commit", "clear_staging", "write_crops", "open_model_ref"]
