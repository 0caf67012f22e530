"""Datasets: (LR, HR) image pairs from folders, benchmark names, or the embedded default set.

Layouts understood by `load_dataset` (folder `D`, scale `s`):

* `D/HR/` + optional `D/LR_bicubic/Xs/<stem>xs.png` (EDSR layout, used by shared/assets)
* `D/` holding HR images directly
* `D/LR/` (or `D/LR_bicubic/Xs/`) without `D/HR/`, or any folder with `lr_only=True`: no HR
* a single image file
* a name such as `Set5`, looked up under a data root
* `default` / `embedded`: four photos shipped inside the scikit-image wheel

Missing LR images are made from HR the way MATLAB's `imresize(HR, 1/s, 'bicubic')` makes
them from an 8-bit image (see `sreval.io.imresize(..., matlab_uint8=True)`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from sreval import memory
from sreval.errors import ConfigError, DataError
from sreval.files import assets_dir
from sreval.io import imresize, read_image

__all__ = ["LR_MADE_MARKER", "Sample", "load_dataset", "assets_dir", "crop_center", "downscale", "IMAGE_SUFFIXES"]

# Suffixes cv2 can decode; anything else in a folder is ignored.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".ppm",
     ".pgm", ".pbm", ".pnm", ".jp2", ".ras", ".sr", ".gif", ".avif"}
)
RESIZE_BYTES_PER_PIXEL = 80
EMBEDDED_NAMES = ("default", "embedded")
# Colour photos inside scikit-image's wheel (public domain / CC0, see skimage/data/README).
EMBEDDED_FILES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
EMBEDDED_LONG_SIDE = 256

# A file beside LR images that were generated from the HR ones (crops a sweep writes): they
# keep counting as generated, which the report says.
LR_MADE_MARKER = "lr_generated_from_hr.txt"

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


# eq=False: the generated __eq__/__hash__ would compare/hash numpy arrays and fail.
@dataclass(frozen=True, eq=False)
class Sample:
    """One test image: float32 HxWx3 RGB in [0, 1]; `hr` is None for LR-only datasets.
    `lr_made`: the LR was generated here from the HR (MATLAB-exact bicubic), not read."""

    name: str
    lr: np.ndarray
    hr: np.ndarray | None
    lr_made: bool = False


def crop_center(img: ArrayOrTensor, h: int, w: int) -> ArrayOrTensor:
    """Central h x w crop: numpy HxW[xC] or torch (..., H, W)."""
    is_tensor = isinstance(img, torch.Tensor)
    if not is_tensor and img.ndim < 2:
        raise ConfigError(f"crop: expected an image, got shape {img.shape}")
    in_h, in_w = (img.shape[-2], img.shape[-1]) if is_tensor else (img.shape[0], img.shape[1])
    if not (0 < h <= in_h and 0 < w <= in_w):
        raise ConfigError(f"crop {h}x{w} does not fit in an image of {in_h}x{in_w}")
    top, left = (in_h - h) // 2, (in_w - w) // 2
    if is_tensor:
        return img[..., top : top + h, left : left + w]
    return img[top : top + h, left : left + w]


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def load_dataset(
    spec: str | Path,
    scale: int,
    *,
    data_root: str | Path | None = None,
    limit: int | None = None,
    lr_only: bool = False,
) -> list[Sample]:
    """Load a dataset as a name-sorted list of samples (first `limit` only, if given)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    # The special names win over a folder of the same name: pass ./default for that.
    if isinstance(spec, str) and spec.strip().lower() in EMBEDDED_NAMES:
        return _load_embedded(scale, limit)
    path = resolve_path(spec, data_root)
    if path.is_file():
        return _load_single_file(path, scale, lr_only)
    if not path.is_dir():  # a device, a FIFO, a socket: never read as data (/dev/zero never ends)
        raise DataError(f"dataset {path}: not an image file or a folder")
    return _load_folder(path, scale, limit, lr_only)


# ---------------------------------------------------------------------------
# Finding the folder
# ---------------------------------------------------------------------------


def resolve_path(spec: str | Path, data_root: str | Path | None) -> Path:
    """An existing path as given, else a dataset name looked up under the data roots."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if path.is_absolute():
        raise DataError(f"dataset {path}: no such file or folder")
    roots = _data_roots(data_root)
    for root in roots:
        found = _find_child(root, str(spec))
        if found is not None:
            return found
    looked = ", ".join(str(r / str(spec)) for r in roots)
    raise DataError(
        f"dataset {spec!r} not found: not an existing path; looked in {looked} "
        "(pass data_root, or set SREVAL_DATA or SREVAL_ASSETS)"
    )


def _data_roots(data_root: str | Path | None) -> list[Path]:
    """Where dataset names are looked up, in order."""
    roots: list[Path] = []
    if data_root is not None:
        roots.append(Path(data_root).expanduser())
    if os.environ.get("SREVAL_DATA"):
        roots.append(Path(os.environ["SREVAL_DATA"]).expanduser())
    roots.append(assets_dir() / "datasets")
    return roots


def _find_child(root: Path, name: str) -> Path | None:
    """root/name, or a unique case-insensitive match (so `set5` finds `Set5`)."""
    exact = root / name
    if exact.exists():
        return exact
    if not root.is_dir() or Path(name).name != name:
        return None
    matches = [c for c in root.iterdir() if c.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted by name (hidden files such as ._x.png skipped)."""
    files = sorted(
        (p for p in folder.iterdir()
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise DataError(f"{folder}: two images named {p.stem!r} ({seen[p.stem].name}, {p.name})")
        seen[p.stem] = p
    return files


def _listed(folder: Path, limit: int | None) -> list[Path]:
    files = _image_files(folder)
    if not files:
        raise DataError(f"no images in {folder}")
    return files[:limit]


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


def _load_folder(folder: Path, scale: int, limit: int | None, lr_only: bool) -> list[Sample]:
    """The images are held together for the run: what they take is counted against the memory
    budget as they are read (from each header, before decoding)."""
    hr_dir, lr_dir = folder / "HR", _lr_dir(folder, scale)
    ledger = memory.Ledger(f"dataset {folder} (its images, held together for the run)")
    if lr_only or (not hr_dir.is_dir() and lr_dir is not None):
        source = lr_dir if lr_dir is not None else folder
        return [Sample(p.stem, read_image(p, ledger), None) for p in _listed(source, limit)]
    if hr_dir.is_dir():
        return _load_hr_lr(hr_dir, folder / "LR_bicubic" / f"X{scale}", scale, limit, ledger)
    return [_pair_from_hr(p, scale, None, ledger) for p in _listed(folder, limit)]


def _lr_dir(folder: Path, scale: int) -> Path | None:
    """The LR images of an LR layout: D/LR_bicubic/Xs, else D/LR, else None."""
    for cand in (folder / "LR_bicubic" / f"X{scale}", folder / "LR"):
        if cand.is_dir():
            return cand
    return None


def _load_hr_lr(hr_dir: Path, lr_dir: Path, scale: int, limit: int | None, ledger: memory.Ledger) -> list[Sample]:
    """EDSR layout: LR from `<stem>x<scale>.*` (or `<stem>.*`) when present, else made."""
    lr_files = {p.stem: p for p in _image_files(lr_dir)} if lr_dir.is_dir() else {}
    marked = (lr_dir / LR_MADE_MARKER).is_file()
    samples, made = [], []
    for hr_path in _listed(hr_dir, limit):
        lr_path = lr_files.get(f"{hr_path.stem}x{scale}") or lr_files.get(hr_path.stem)
        if lr_path is None and lr_files:
            made.append(hr_path.stem)
        sample = _pair_from_hr(hr_path, scale, lr_path, ledger)
        samples.append(replace(sample, lr_made=True) if marked else sample)
    if made:
        warnings.warn(
            f"{lr_dir}: no LR file for {', '.join(made)}; made them with bicubic", stacklevel=3
        )
    return samples


def _load_single_file(path: Path, scale: int, lr_only: bool) -> list[Sample]:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"dataset {path}: not an image file or a folder")
    if lr_only:
        return [Sample(path.stem, read_image(path), None)]
    return [_pair_from_hr(path, scale, None)]


def _pair_from_hr(hr_path: Path, scale: int, lr_path: Path | None, ledger: memory.Ledger | None = None) -> Sample:
    """HR cropped top-left to a multiple of scale; LR read (size-checked) or made."""
    hr = _crop_to_multiple(read_image(hr_path, ledger), scale, hr_path)
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr_path is None:
        # MATLAB-exact bicubic works in float64: about 80 bytes per HR pixel while it runs
        (ledger or memory.Ledger(f"making the LR of {hr_path}")).add(
            0, transient=RESIZE_BYTES_PER_PIXEL * hr.shape[0] * hr.shape[1])
        return Sample(hr_path.stem, downscale(hr, scale), hr, lr_made=True)
    lr = read_image(lr_path, ledger)
    if lr.shape[:2] != want:
        raise DataError(
            f"{lr_path}: LR size {lr.shape[1]}x{lr.shape[0]} does not match HR {hr_path} "
            f"({hr.shape[1]}x{hr.shape[0]} after crop) / {scale} = {want[1]}x{want[0]}"
        )
    return Sample(hr_path.stem, lr, hr)


def _crop_to_multiple(hr: np.ndarray, scale: int, path: Path) -> np.ndarray:
    """Top-left crop to a multiple of scale, as SelfExSR and most SR benchmarks did."""
    h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
    if h == 0 or w == 0:
        raise DataError(f"{path}: image {hr.shape[1]}x{hr.shape[0]} is smaller than scale {scale}")
    return np.ascontiguousarray(hr[:h, :w])


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR image as MATLAB's imresize(hr, 1/scale, 'bicubic') makes it from an 8-bit image."""
    return imresize(hr, 1.0 / scale, matlab_uint8=True)


# ---------------------------------------------------------------------------
# Embedded default set
# ---------------------------------------------------------------------------


def embedded_dir() -> Path:
    """scikit-image's data/ folder, found without importing skimage (slow, heavy)."""
    spec = importlib.util.find_spec("skimage")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        if (Path(loc) / "data").is_dir():
            return Path(loc) / "data"
    raise DataError("embedded default set: scikit-image is not installed (pip install scikit-image)")


def _load_embedded(scale: int, limit: int | None) -> list[Sample]:
    data_dir = embedded_dir()
    samples = []
    for fname in EMBEDDED_FILES[:limit]:
        hr = _modest_hr(read_image(data_dir / fname), scale)
        samples.append(Sample(Path(fname).stem, downscale(hr, scale), hr, lr_made=True))
    return samples


def _modest_hr(img: np.ndarray, scale: int) -> np.ndarray:
    """Shrink so the long side is ~EMBEDDED_LONG_SIDE (8-bit result), centre-crop to a multiple of scale."""
    factor = EMBEDDED_LONG_SIDE / max(img.shape[:2])
    if factor < 1.0:
        size = (max(scale, round(img.shape[0] * factor)), max(scale, round(img.shape[1] * factor)))
        img = imresize(img, size=size, matlab_uint8=True)
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return np.ascontiguousarray(crop_center(img, h, w))


@functools.lru_cache(maxsize=len(EMBEDDED_FILES))
def embedded_photo(name: str) -> np.ndarray:
    """One of the embedded photos at full size (read once per process)."""
    return read_image(embedded_dir() / name)


def probe_batch(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """n crops (n, 3, h, w) of a real photo at seeded positions, for parity and shape probes.

    Uniform noise is a poor probe: real-weight networks are not built for it, and some (PAN)
    blow up to 1e20 on it, where any float comparison is meaningless.
    """
    try:
        photo = embedded_photo(EMBEDDED_FILES[0])
    except DataError:  # no scikit-image: noise, the only input left
        return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
    if photo.shape[0] < h or photo.shape[1] < w:
        photo = imresize(photo, size=(max(h, photo.shape[0]), max(w, photo.shape[1])))
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        y = int(rng.integers(0, photo.shape[0] - h + 1))
        x = int(rng.integers(0, photo.shape[1] - w + 1))
        crops.append(photo[y:y + h, x:x + w].transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops))).float()
