"""The model zoo: one manifest (`model_zoo/manifest.json`, shipped as `sreval.model_zoo`) of
canonical models, built from the architectures in `sreval.exporters` into ONNX files in the
user cache, verified against recorded PSNRs.

Weights come from, in this order: `--weights PATH`; the shared assets (SREVAL_ASSETS) when the
manifest names a file there and its SHA-256 matches; the download cache; the official URL
(downloaded, SHA-256 verified, then cached); an installed wheel of ncnn models for the ncnn
entries (`sreval.exporters.wheels`). A checkpoint is always read as data (`torch.load(weights_only=True)`).

A MODEL argument that names a zoo entry not built yet is built on first use when that needs
no download (no weights, weights in an installed wheel or in the assets, or already cached);
the `sreval.zoo` logger says so (a warning, so that it shows without logging set up).
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from sreval import checkpoint, exporters
from sreval.conventions import Overrides
from sreval.data import load_dataset
from sreval.errors import ConfigError, ModelError
from sreval.evaluation import evaluate_clean
from sreval.exporters import wheels
from sreval.exporters.common import export_onnx, load_weights, read_checkpoint
from sreval.files import assets_dir, cache_dir, sha256_file
from sreval.graphstats import graph_stats
from sreval.manifest import Entry, entry, manifest, ncnn_files, weights_available, zoo_dir
from sreval.model import SRModel

log = logging.getLogger(__name__)


def zoo_model_path(name: str) -> Path:
    """The built ONNX file of a zoo name; what every MODEL argument falls back to."""
    entries = manifest()
    if name not in entries:
        raise ModelError(f"{name}: no such model file, and no zoo model of that name")
    e = entries[name]
    if not e.built:
        if not weights_available(e):
            raise ModelError(f"zoo model {name} is not built yet and its weights need a download or "
                             f"--weights: run `sreval zoo build {name}`")
        log.warning("building zoo model %s on first use (%s) into %s", name, e.weights.describe(), zoo_dir())
        build(name)
    return e.path


def resolve_model_path(spec: str | Path) -> Path:
    """A MODEL argument: a path (with a '/' or an .onnx suffix, or an existing file) or a zoo
    name (built on first use where that needs no download). A bare name that is both a zoo
    entry and a file or folder here is refused: a file must never silently stand in for the
    zoo model (write ./NAME for the file). A PyTorch checkpoint (.pth, .pt, .ckpt,
    .safetensors) stands for its verified ONNX export (`sreval.checkpoint`)."""
    path = Path(spec)
    if checkpoint.is_checkpoint(path):
        return checkpoint.cached_onnx(path, on_export=log.warning)
    if path.suffix == ".onnx" or "/" in str(spec) or isinstance(spec, Path) and spec.is_absolute():
        return path
    try:
        names = manifest()
    except ModelError:  # no readable manifest: a bare name can only be a file
        names = {}
    if str(spec) in names:
        if os.path.lexists(path):
            raise ModelError(f"{spec!r} is a zoo model and also a file or folder here: write ./{spec} for the "
                             f"file, or run from another folder for the zoo model")
        return zoo_model_path(str(spec))
    if path.exists():
        return path
    return zoo_model_path(str(spec))


def open_model(spec: str | Path, *, device: str = "auto", check: bool = True,
               overrides: Overrides | None = None) -> SRModel:
    """An `SRModel` by path or zoo name; with `check`, its conversion verified (parity).
    `overrides` (scale, range, color, layout, preupsampled, output, inputs) override the
    file's metadata and what the probes find."""
    model = SRModel(resolve_model_path(spec), device=device, overrides=overrides)
    if check:
        model.check_parity()
    return model


# ----------------------------------------------------------------------------- weights


def _verify(path: Path, expected: str | None, what: str) -> str:
    digest = sha256_file(path)
    if expected and not digest.startswith(expected.lower()):
        raise ModelError(f"{what}: SHA-256 mismatch: expected {expected}, got {digest}")
    return digest


def find_weights(e: Entry, override: Path | None = None,
                 download: Callable[[str, Path], None] | None = None,
                 other_weights: bool = False) -> tuple[Path, str]:
    """(checkpoint path, SHA-256) for an entry with a checkpoint file. A `--weights` file is
    checked against the manifest's SHA-256 where it records one: another file is refused
    unless `other_weights` (the built model is then named as not canonical, see build)."""
    w = e.weights
    if override is not None:
        if not Path(override).is_file():
            raise ModelError(f"weights file not found: {override}")
        digest = sha256_file(Path(override))
        if w.sha256 and not digest.startswith(w.sha256.lower()) and not other_weights:
            raise ModelError(f"{override}: SHA-256 {digest[:16]}... is not the official {e.name} checkpoint "
                             f"({w.sha256[:16]}...); pass --other-weights to build it anyway, under another name")
        return Path(override), digest
    if w.kind == "asset" and w.path and (assets_dir() / w.path).is_file():
        p = assets_dir() / w.path
        return p, _verify(p, w.sha256, str(p))
    if not w.url:
        raise ModelError(f"{e.name}: weights are not available here ({w.note or 'no download URL'}); "
                         f"pass --weights PATH")
    cached = cache_dir() / "weights" / Path(w.url).name
    if not cached.is_file():
        if not w.sha256:
            raise ModelError(f"{e.name}: no SHA-256 is recorded for {w.url}, so it is not downloaded "
                             f"unverified; download it yourself and pass --weights PATH")
        (download or _download)(w.url, cached)
    return cached, _verify(cached, w.sha256, str(cached))


def _download(url: str, dest: Path) -> None:
    """Fetch to a temporary file beside `dest`, then rename: no half file is ever cached."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, dest)
    except OSError as e:
        raise ModelError(f"cannot download {url}: {e}; pass --weights PATH instead") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- build


def _fresh_module(e: Entry) -> Any:
    """A randomly initialised module of the entry's architecture (ncnn entries: its variant)."""
    if e.weights.kind == "ncnn":
        return wheels.build_ncnn_model(e.weights.ncnn_model or e.name, random_weights=True)
    spec = exporters.ARCHS.get(e.arch)
    if spec is None:
        raise ModelError(f"{e.name}: unknown architecture {e.arch!r}")
    return spec.build(e.scale)


def is_canonical(e: Entry, digest: str | None) -> bool:
    """Whether weights of this digest are the entry's own (no recorded hash: cannot tell, yes)."""
    return not e.weights.sha256 or (digest or "").startswith(e.weights.sha256.lower())


def _module(e: Entry, weights: Path | None, other_weights: bool = False) -> tuple[Any, dict[str, str]]:
    """The PyTorch module of an entry with its weights loaded, and provenance metadata."""
    spec = exporters.ARCHS[e.arch]
    meta = {"sreval.name": e.name, "sreval.license": e.license,
            "sreval.weights_source": e.weights.describe()}
    if e.weights.kind == "ncnn" and weights is None:
        param, binfile = ncnn_files(e.weights.ncnn_model or e.name)
        meta["sreval.weights_sha256"] = sha256_file(binfile)
        return wheels.build_ncnn_model(e.weights.ncnn_model or e.name), meta
    module = _fresh_module(e)
    if e.weights.kind != "none" or weights is not None:
        path, digest = find_weights(e, weights, other_weights=other_weights)
        load_weights(module, spec, read_checkpoint(path), str(path))
        meta["sreval.weights_sha256"] = digest
        if weights is not None:
            meta["sreval.weights_source"] = f"local:{Path(weights).name}"
        if not is_canonical(e, digest):
            meta["sreval.name"] = f"{e.name}@{digest[:8]}"  # not the canonical model: its name says so
    return module.eval(), meta


def build(name: str, *, weights: Path | None = None, out: Path | None = None,
          random_weights: bool = False, other_weights: bool = False) -> Path:
    """Export one zoo entry to its canonical ONNX file (parity-checked by export_onnx). With
    weights that are not the entry's own (--other-weights), the file and the model's name
    carry the checkpoint's digest (NAME@1234abcd): it never takes the canonical name."""
    e = entry(name)
    if random_weights:
        module = _fresh_module(e).eval()
        meta = {"sreval.name": e.name, "sreval.weights_source": "random (Table 1 counting only)"}
    else:
        module, meta = _module(e, weights, other_weights)
    target = out or (e.path if meta.get("sreval.name", e.name) == e.name
                     else e.path.with_name(f"{meta['sreval.name']}.onnx"))
    return export_onnx(module, exporters.ARCHS[e.arch], target, scale=e.scale, metadata=meta)


# ----------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class TableRow:
    name: str
    params: int
    conv_layers: int
    gan_trained: bool
    params_checkpoint: int | None
    paper_params: str | None
    paper_conv_layers: int | None

    counted: str = "graph"  # which count the paper's Table 1 uses: graph (x4 path) or checkpoint

    @property
    def table_params(self) -> int:
        return self.params_checkpoint if self.counted == "checkpoint" and self.params_checkpoint else self.params

    @property
    def params_m(self) -> str:
        return f"{self.table_params / 1e6:.1f}M" if self.table_params else "0"

    @property
    def matches_paper(self) -> bool | None:
        if self.paper_params is None:
            return None
        return self.params_m == self.paper_params and self.conv_layers == self.paper_conv_layers

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "conv_layers": self.conv_layers,
                "gan_trained": self.gan_trained, "params_checkpoint": self.params_checkpoint,
                "params_m": self.params_m, "paper_params": self.paper_params,
                "paper_conv_layers": self.paper_conv_layers, "matches_paper": self.matches_paper,
                "params_counted": self.counted}


def table(names: Sequence[str] | None = None, *, work_dir: Path | None = None) -> list[TableRow]:
    """Table 1 computed from each exported graph: the built file where there is one, else an
    export with random weights (enough to count parameters and layers)."""
    entries = manifest()
    chosen = list(names) if names else [n for n, e in entries.items() if e.paper]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(work_dir or tmp)
        for name in chosen:
            e = entry(name)
            path = e.path if e.built else build(name, out=scratch / f"{name}.onnx", random_weights=True)
            proto = onnx.load(str(path), load_external_data=False)
            meta = {p.key: p.value for p in proto.metadata_props}
            stats = graph_stats(proto)
            ckpt = meta.get("sreval.params_checkpoint")
            rows.append(TableRow(
                name=name, params=stats.params, conv_layers=stats.conv_layers,
                gan_trained=meta.get("sreval.gan_trained") == "1",
                params_checkpoint=int(ckpt) if ckpt else None,
                paper_params=e.table1.get("params"), paper_conv_layers=e.table1.get("conv_layers"),
                counted=e.table1.get("params_counted", "graph"),
            ))
    return rows


# ----------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Verdict:
    name: str
    dataset: str
    psnr: float | None
    expected: float | None
    parity: float | None
    status: str  # ok | regression | not-built | no-reference | error
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("regression", "not-built", "error")


def verify(names: Sequence[str] | None, dataset: str = "Set5", *, tol: float = 0.05,
           data_root: Path | None = None, device: str = "cpu") -> list[Verdict]:
    """Parity and clean PSNR of built models against the manifest's measured values."""
    if tol <= 0:
        raise ConfigError(f"tolerance must be > 0, got {tol}")
    entries = manifest()
    chosen = list(names) if names else [n for n, e in entries.items() if e.built]
    out = []
    for name in chosen:
        e = entry(name)
        if not e.built:
            out.append(Verdict(name, dataset, None, e.expected(dataset), None, "not-built",
                               f"run `sreval zoo build {name}`"))
            continue
        model = SRModel(e.path, device=device)
        parity = model.check_parity()
        samples = load_dataset(dataset, e.scale, data_root=data_root)
        rows = evaluate_clean(model.torch(), samples, e.scale, device=model.device)
        value = sum(r["psnr_sr"] for r in rows) / len(rows)
        exp = e.expected(dataset)
        if exp is None:
            status = "no-reference"
        else:
            status = "ok" if abs(value - exp) <= tol else "regression"
        out.append(Verdict(name, dataset, value, exp, parity.max_diff, status))
    return out
