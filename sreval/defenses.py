"""Input-transformation defenses (paper sec. 5.3) as differentiable wrappers around a model,
and their evaluation in two settings:

* non-adaptive (the paper's): the attacker knows only the bare model; its adversarial LR is
  fed through the defense;
* adaptive: the attacker differentiates through the defense too. A defense is only as good
  as the best attack that knows about it, so both rows are reported side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sreval.attacks.basic import attack_image
from sreval.config import DEFENSE_NAMES, BasicConfig
from sreval.attacks.optim import Trace
from sreval.data import Sample
from sreval.errors import ConfigError, DataError
from sreval.evaluation import ImageSaver, Progress, Row, evaluate_clean, images, measure, measure_hr, super_resolve, to_image
from sreval.io import imresize_torch
from sreval.metrics import psnr


class ResizeDefense(nn.Module):
    """Shrink the LR input by one pixel per side length and resize it back (MATLAB bicubic,
    differentiable), then super-resolve: the resampling scrambles the pixel-exact pattern."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < 3:
            raise DataError(f"resize defense: LR image {w}x{h} is too small to shrink by a pixel")
        small = imresize_torch(x, size=(h - 1, w - 1))
        return self.model(imresize_torch(small, size=(h, w)))


def _transform(x: Tensor, rot: int, flip: bool) -> Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, rot, dims=(-2, -1))


def _inverse(y: Tensor, rot: int, flip: bool) -> Tensor:
    y = torch.rot90(y, -rot, dims=(-2, -1))
    return y.flip(-1) if flip else y


class SelfEnsemble(nn.Module):
    """Geometric self-ensemble (EDSR): the 8 flips/rotations of the input, each output
    transformed back, averaged. Fully convolutional models accept the transposed sizes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        outs = [_inverse(self.model(_transform(x, rot, flip)), rot, flip)
                for flip in (False, True) for rot in range(4)]
        return torch.stack(outs).mean(0)


# in the order of the names the (light) configuration validates: resize, self-ensemble
DEFENSES: dict[str, type[nn.Module]] = dict(zip(DEFENSE_NAMES, (ResizeDefense, SelfEnsemble)))


def defend(model: nn.Module, name: str) -> nn.Module:
    """The model behind the named defense (eval mode, differentiable)."""
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense {name!r}: choose from {', '.join(DEFENSES)}")
    return DEFENSES[name](model).eval()


# ----------------------------------------------------------------------------- runners


def _attack_rows(
    name: str, attack: str, alphas: Sequence[float], xs: Tensor, x0: Tensor, hr: np.ndarray | None,
    evaluator: nn.Module, bare_sr0: Tensor, scale: int, saver: ImageSaver,
) -> list[Row]:
    """Rows for adversarial LRs `xs` (one per budget) seen through `evaluator`. psnr_sr is
    against the evaluator's own clean output; psnr_sr_vs_bare against the bare model's."""
    sr0 = super_resolve(evaluator, x0)
    rows: list[Row] = []
    for alpha, x in zip(alphas, xs):
        sr = super_resolve(evaluator, x[None])
        rows.append({
            "image": name, "attack": attack, "alpha": alpha,
            **measure(x0, x[None], sr0, sr, scale), **measure_hr(sr, hr, scale),
            "psnr_sr_vs_bare": psnr(to_image(bare_sr0), to_image(sr), y=True, shave=scale),
        })
        saver(f"{name}_{attack}_a{alpha * 255:g}", sr=sr)
    return rows



def run_defended_attack(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    cfg: BasicConfig,
    defenses: Sequence[str],
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> list[Row]:
    """Per image and budget: the bare attack ('basic'), its examples through each defense
    ('basic+D', non-adaptive) and an attack through the defense ('basic+D-adaptive')."""
    reference = cfg.reference_for(samples)
    guards = {d: defend(model, d) for d in defenses}
    rows: list[Row] = []
    for _, s, x0, hr in images(samples, device, progress):
        bare_sr0 = super_resolve(model, x0)
        xs, trace = attack_image(model, x0, hr, cfg, reference)
        rows += _with(trace, _attack_rows(s.name, "basic", cfg.alphas, xs, x0, s.hr, model, bare_sr0, scale, saver))
        for d, guarded in guards.items():
            rows += _attack_rows(s.name, f"basic+{d}", cfg.alphas, xs, x0, s.hr, guarded, bare_sr0, scale, saver)
            adaptive, trace = attack_image(guarded, x0, hr, cfg, reference)
            rows += _with(trace, _attack_rows(s.name, f"basic+{d}-adaptive", cfg.alphas, adaptive, x0, s.hr,
                                              guarded, bare_sr0, scale, saver))
    return rows


def _with(trace: Trace, rows: list[Row]) -> list[Row]:
    """The rows of the attacks that ran (one per budget), with their loop's evidence."""
    return [{**r, **ev} for r, ev in zip(rows, trace.rows(), strict=True)]


def evaluate_defended(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    defenses: Sequence[str],
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> list[Row]:
    """Clean SR quality against HR of the bare model ('none') and through each defense
    ('none+D'): what a defense costs when nobody attacks."""
    evaluators = {"none": model} | {f"none+{d}": defend(model, d) for d in defenses}
    return evaluate_clean(evaluators, samples, scale, device=device, progress=progress, saver=saver)


__all__ = ["DEFENSES", "ResizeDefense", "SelfEnsemble", "defend",
           "run_defended_attack", "evaluate_defended"]
