"""The targeted attack (paper sec. 5.1, eq. 11): descend the distance between f(X) and a
target HR image, so the SR output shows the target while the LR input still shows the source.

The paper's showcase uses two adjacent foreman frames (open / half-closed eyes): the LR
source is our MATLAB-bicubic downscale of the source frame, whose own HR is the frame itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sreval.attacks.basic import GradientAttack
from sreval.config import check_batch, check_steps, parse_alpha
from sreval.data import Sample, assets_dir, load_dataset
from sreval.errors import DataError
from sreval.evaluation import ImageSaver, Progress, Row, measure, super_resolve, to_image, to_tensor
from sreval.metrics import psnr


@dataclass(frozen=True)
class TargetedIFGSM(GradientAttack):
    """`x_adv = TargetedIFGSM(model, eps=16/255, steps=50)(x, target_hr)`: descends the MSE
    to `target_hr` (eq. 11), from X0 (the gradient to a different image is not zero there).
    Several budgets: budget-major output, as `IFGSM`; `method` any of the shared loop's."""

    reference: str = "hr"  # the distance is always to the target HR
    _descend = True


@dataclass(frozen=True)
class TargetedConfig:
    alphas: tuple[float, ...] = (16 / 255,)
    steps: int = 50
    quantize: bool = True
    batch: int | None = None  # budgets attacked together; None = all
    method: str = "ifgsm"
    norm: str = "linf"
    restarts: int = 1
    quantize_aware: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas), self.norm)))
        check_steps(self.steps)
        check_batch(self.batch)
        self.attack(nn.Identity(), self.alphas)  # validates method, norm, restarts

    def attack(self, model: nn.Module, alphas: Sequence[float]) -> TargetedIFGSM:
        restarts = self.restarts if self.method in ("pgd", "apgd") else 1
        return TargetedIFGSM(model, list(alphas), self.steps, "hr", self.quantize, self.quantize_aware, self.norm,
                             restarts, self.seed, method=self.method, batch=self.batch)


@dataclass(frozen=True, eq=False)
class TargetedPair:
    """Source LR/HR and target LR/HR, float32 HxWx3 in [0, 1], HR sizes equal."""

    source: Sample
    target: Sample


FOREMAN = ("foreman_cif_frame000.png", "foreman_cif_frame001.png")  # open eyes, half-closed


def foreman_frames() -> tuple[Path, Path]:
    """The paper's showcase pair in the shared assets: (source, target)."""
    folder = assets_dir() / "datasets" / "foreman"
    return folder / FOREMAN[0], folder / FOREMAN[1]


def require_file(role: str, path: str | Path) -> Path:
    if not Path(path).is_file():
        raise DataError(f"{role} image not found: {path}")
    return Path(path)


def load_pair(source: str | Path, target: str | Path, scale: int) -> TargetedPair:
    """Both frames read as HR images (cropped to a multiple of scale), LR made by MATLAB
    bicubic; the target must have the source's HR size."""
    require_file("source", source)
    require_file("target", target)
    src = load_dataset(Path(source), scale)[0]
    tgt = load_dataset(Path(target), scale)[0]
    if src.hr.shape != tgt.hr.shape:
        raise DataError(
            f"target HR is {tgt.hr.shape[1]}x{tgt.hr.shape[0]} but source HR is "
            f"{src.hr.shape[1]}x{src.hr.shape[0]} (after cropping to a multiple of {scale}); they must match"
        )
    return TargetedPair(src, tgt)


def closeness(x: Tensor, sr: Tensor, pair: TargetedPair, scale: int) -> Row:
    """PSNR of the SR output to the target and to the source HR, and of the LR to the
    target's LR (the attack succeeds when the SR is nearer the target while the LR is not)."""
    out, lr = to_image(sr), to_image(x)
    return {
        "psnr_target_hr": psnr(out, pair.target.hr, y=True, shave=scale),
        "psnr_source_hr": psnr(out, pair.source.hr, y=True, shave=scale),
        "psnr_lr_target": psnr(lr, pair.target.lr, y=True),
    }


@dataclass(frozen=True)
class TargetedResult:
    rows: list[Row]
    clean: Row  # the same measurements for the unattacked source


def run_targeted(
    model: nn.Module,
    pair: TargetedPair,
    scale: int,
    cfg: TargetedConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> TargetedResult:
    """One row per budget: psnr_lr = PSNR(X, X0), psnr_sr = PSNR(f(X), f(X0)),
    psnr_target_hr, psnr_source_hr (= PSNR(f(X), original HR)), psnr_lr_target."""
    x0 = to_tensor(pair.source.lr, device)
    target = to_tensor(pair.target.hr, device)
    sr0 = super_resolve(model, x0)
    if tuple(sr0.shape[-2:]) != tuple(target.shape[-2:]):
        raise DataError(f"SR output is {sr0.shape[-1]}x{sr0.shape[-2]} but the target HR is "
                        f"{target.shape[-1]}x{target.shape[-2]}")

    xs, trace = cfg.attack(model, cfg.alphas).run(x0, target)
    evidence = trace.rows(sign=-1.0)  # the loss descended: MSE to the target
    rows: list[Row] = []
    for i, (alpha, x) in enumerate(zip(cfg.alphas, xs)):
        sr = super_resolve(model, x[None])
        c = closeness(x[None], sr, pair, scale)
        rows.append({"image": pair.source.name, "target": pair.target.name, "attack": "targeted",
                     "alpha": alpha, **measure(x0, x[None], sr0, sr, scale), **c,
                     "psnr_hr": c["psnr_source_hr"],
                     "closer_to_target": c["psnr_target_hr"] > c["psnr_source_hr"],
                     "method": cfg.attack(model, [alpha]).as_method().label, **evidence[i]})
        saver(f"{pair.source.name}_a{alpha * 255:g}", lr=x, sr=sr)
        if progress:
            progress(i + 1, len(cfg.alphas))
    # the HR pair too: a report shows only images inside its run folder
    saver(pair.source.name, sr_clean=sr0, lr_target=to_tensor(pair.target.lr), hr=to_tensor(pair.source.hr),
          hr_target=to_tensor(pair.target.hr))
    return TargetedResult(rows, closeness(x0, sr0, pair, scale))


__all__ = ["foreman_frames", "require_file", "TargetedIFGSM", "TargetedConfig", "TargetedPair", "TargetedResult", "load_pair",
           "run_targeted", "closeness"]
