"""Results on disk: report.json (schema sreval.report/1) and results.csv, written atomically
and together (sreval.files) so that a crash never leaves a file that looks complete."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from sreval.files import atomic_write, atomic_write_many

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
    import torch

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
    out_dir: Path,
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
    """report.json + results.csv in out_dir; returns the report as written."""
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
    out_dir = Path(out_dir)
    atomic_write_many({out_dir / "results.csv": rows_csv(report["results"]),
                       out_dir / "report.json": json.dumps(report, indent=2, allow_nan=False) + "\n"})
    return report


def read_json(path: Path, schema: str, what: str, missing: str) -> dict[str, Any]:
    """A JSON file of ours, checked for its schema; every failure is one DataError line."""
    from sreval.errors import DataError

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
