"""The cell cache of a sweep folder, in one place.

A sweep folder holds its plan (sweep.json, written before any cell runs), its cells
(RUN_DIR/cells/<key>/, each a job's report and files) and the merged report of all finished
cells. A cell is computed in a staging folder (RUN_DIR/cells/.staging-<key>.<pid>.*) and renamed
into place with a checksum file that lists every file's SHA-256; it is done exactly when that
file matches its files and its report.json is a valid report of this very cell, so an
interrupted sweep resumes without recomputing finished cells and never counts a half-written,
edited or foreign one (such a cell is recomputed and the sweep says so).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sreval.errors import SrevalError
from sreval.files import atomic_write, sha256_file
from sreval.report import STANDARD_KEYS, Report, environment, read_json, read_report, write_report

PLAN = "sweep.json"
PLAN_SCHEMA = "sreval.sweeps/1"
CELLS = "cells"
CHECKSUMS = "cell.sha256.json"
STAGING_PREFIX = ".staging-"


class CacheError(SrevalError):
    """A cell that cannot be stored (no report written, a worker's file outside its folder)."""


# Code that only presents results: editing it leaves every cached number valid.
PRESENTATION = frozenset({"cli", "htmlreport.py", "sections.py", "figures.py", "check.py", "demo.py", "runview.py"})


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
        if f.relative_to(root).parts[0] not in PRESENTATION:
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
          repaired: Sequence[str] = ()) -> Report:
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
        run_dir, kind="sweep", command="sweep", model={"name": ", ".join(models), "models": list(models.values())},
        data={"datasets": list(dict.fromkeys(c["dataset"] for c in described))},
        config=config, environment=environment(device), conventions=conventions, results=rows,
        sections={"sweep": {"complete": complete, "cells": entries, "sreval": code_version(), "repaired": list(repaired)}},
    )


def read_plan(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / PLAN, PLAN_SCHEMA, "sweep plan", f"{run_dir}: not a sweep folder (no {PLAN})")


# ----------------------------------------------------------------------------- staging and commit


def staging_dir(run_dir: Path, key: str) -> Path:
    root = Path(run_dir) / CELLS
    root.mkdir(parents=True, exist_ok=True)
    # the pid lets clear_staging tell a crashed sweep's leftovers from a live sweep's work
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{STAGING_PREFIX}{key}.{os.getpid()}."))


def commit(run_dir: Path, key: str, staged: Path) -> None:
    """Rename a complete staging folder into place (atomic); its report.json makes it done."""
    if not (staged / "report.json").is_file():
        raise CacheError(f"cell {key}: no report.json was written")
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
            raise CacheError(f"a worker sent a file outside its cell folder: {rel}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
