"""Running a model over a dataset and measuring what came out: the clean evaluation and the
per-image measurements every attack reports."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sreval.data import Sample
from sreval.errors import DataError, ModelError
from sreval.io import quantize, write_image
from sreval.metrics import psnr, ssim
from sreval.report import Row

Progress = Callable[[int, int], None]  # (done, total)


def to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """HWC numpy in [0, 1] -> (1, 3, H, W) float32."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None].to(device)


def images(samples: Sequence[Sample], device: torch.device | str, progress: Progress | None = None, *,
           need_hr: bool = False) -> Iterator[tuple[int, Sample, Tensor, Tensor | None]]:
    """The one loop over a dataset: each sample as (index, sample, LR, HR or None), the images
    as (1, C, H, W) tensors on the device; `progress(done, total)` after each image. With
    `need_hr`, an LR-only sample is one line of error."""
    for i, s in enumerate(samples):
        if need_hr and s.hr is None:
            raise DataError(f"{s.name}: no HR image to evaluate against (LR-only dataset)")
        yield i, s, to_tensor(s.lr, device), (to_tensor(s.hr, device) if s.hr is not None else None)
        if progress:
            progress(i + 1, len(samples))


def to_image(x: Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor -> HWC float32 numpy."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[0]
    return x.permute(1, 2, 0).numpy()


def super_resolve(model: nn.Module, x: Tensor) -> Tensor:
    """The model's output as an image file would hold it: clipped to [0, 1], 8-bit rounded."""
    with torch.no_grad():
        y = model(x)
    if not torch.isfinite(y).all():
        raise ModelError("model output contains NaN or Inf")
    return quantize(y.clamp(0.0, 1.0))


def finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def measure(
    x0: Tensor, x: Tensor, sr0: Tensor, sr: Tensor, scale: int, mask: np.ndarray | None = None
) -> Row:
    """LR PSNR (X0 vs X, no shave) and SR PSNR (f(X0) vs f(X), shave = scale), Y and RGB.
    `mask` (HR-sized, True where measured) restricts the SR PSNR, as the partial attack needs."""
    a0, a, s0, s = (to_image(t) for t in (x0, x, sr0, sr))
    return {
        "psnr_lr": psnr(a0, a, y=True),
        "psnr_sr": psnr(s0, s, y=True, shave=scale, mask=mask),
        "psnr_lr_rgb": psnr(a0, a, y=False),
        "psnr_sr_rgb": psnr(s0, s, y=False, shave=scale, mask=mask),
    }


def measure_hr(sr: Tensor, hr: np.ndarray | None, scale: int) -> Row:
    """Quality against the ground truth, where there is one."""
    if hr is None:
        return {}
    out = to_image(sr)
    if out.shape != hr.shape:
        raise DataError(f"SR output is {out.shape[1]}x{out.shape[0]} but HR is {hr.shape[1]}x{hr.shape[0]}")
    return {"psnr_hr": psnr(out, hr, y=True, shave=scale), "ssim_hr": ssim(out, hr, shave=scale)}


class ImageSaver:
    """Writes attacked LR / SR images as PNG for a run folder, or nothing when `folder` is None.

    The images are written into a staging folder beside RUN_DIR/images and replace it as one
    unit when the run's report has landed (`commit`): a run that fails halfway (Ctrl-C, a full
    disk, a model error) leaves the earlier run's report and images whole, and the images of
    an earlier run never show up beside a new report (without `save`, they are removed at
    commit)."""

    def __init__(self, out_dir: Path | None, save: bool = False):
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.folder = None if self.out_dir is None or not save else self.out_dir / f".images.staging-{os.getpid()}"
        if self.out_dir is not None and self.out_dir.is_dir():  # a crashed run's leftovers (the folder is locked)
            for stale in [*self.out_dir.glob(".images.staging-*"), *self.out_dir.glob(".images.old-*")]:
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)

    def __call__(self, name: str, **images: Tensor) -> None:
        if self.folder is None:
            return
        for kind, img in images.items():
            write_image(self.folder / image_file_name(name, kind), to_image(img))

    def commit(self) -> None:
        """Put this run's images in place of the earlier run's (after its report landed)."""
        if self.out_dir is None:
            return
        final = self.out_dir / "images"
        old = self.out_dir / f".images.old-{os.getpid()}"
        if final.is_symlink() or (final.exists() and not final.is_dir()):
            final.unlink()  # the link itself, never what it points to
        elif final.is_dir():
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        if self.folder is not None and self.folder.is_dir():
            os.replace(self.folder, final)

    def discard(self) -> None:
        """Drop this run's staged images (the run failed)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def image_file_name(name: str, kind: str) -> str:
    """'<name>_<kind>.png', with a long name cut and made unique by a hash, so that every file
    name stays far below the 255 bytes file systems allow (names come from the data)."""
    if len(name.encode()) <= 120:
        return f"{name}_{kind}.png"
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name.encode()[:100].decode(errors='ignore')}~{digest}_{kind}.png"


def evaluate_clean(
    model: nn.Module | Mapping[str, nn.Module],
    samples: Sequence[Sample],
    scale: int,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> list[Row]:
    """Clean SR quality against HR (PSNR Y/RGB, SSIM Y), one row per image, attack 'none'; or,
    for a mapping {attack label: model} (a model through its defenses), one row per image and
    label, images saved under image_label."""
    models = model if isinstance(model, Mapping) else {"none": model}
    rows: list[Row] = []
    for _, s, x0, _ in images(samples, device, progress, need_hr=True):
        for attack, m in models.items():
            out = to_image(sr := super_resolve(m, x0))
            if out.shape != s.hr.shape:
                raise DataError(f"{s.name}: SR output is {out.shape[1]}x{out.shape[0]} but HR is "
                                f"{s.hr.shape[1]}x{s.hr.shape[0]}")
            rows.append({
                "image": s.name, "attack": attack, "alpha": 0.0,
                "psnr_sr": psnr(out, s.hr, y=True, shave=scale),
                "psnr_sr_rgb": psnr(out, s.hr, y=False, shave=scale),
                "ssim_sr": ssim(out, s.hr, shave=scale),
            })
            saver(s.name if model is not models else f"{s.name}_{attack}", sr=sr)
    return rows
