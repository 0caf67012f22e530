"""The partial attack (paper sec. 3.3, eq. 8-10): perturb only the central half of the LR
image and measure the damage only outside the HR counterpart of that region.

Beyond the paper: how the damage decays with distance from the attacked region. Every HR
pixel outside the mask gets its Chebyshev distance to the mask, in LR pixels (ceil of the HR
distance / scale); the mean squared error of f(X) vs f(X0) per ring of equal distance makes
the paper's "permeation" a curve instead of one number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sreval.attacks.basic import GradientAttack
from sreval.config import BasicConfig
from sreval.data import Sample
from sreval.errors import ConfigError, DataError
from sreval.evaluation import ImageSaver, Progress, Row, images, measure, measure_hr, super_resolve, to_image
from sreval.io import rgb_to_y
from sreval.metrics import psnr


def mask_bounds(h: int, w: int) -> tuple[int, int, int, int]:
    """Eq. 10: rows [top, bottom) and columns [left, right) with h/4 <= y < 3h/4, w/4 <= x < 3w/4."""
    if min(h, w) < 2:
        raise DataError(f"partial attack: LR image {w}x{h} is too small for a central mask")
    return math.ceil(h / 4), math.ceil(3 * h / 4), math.ceil(w / 4), math.ceil(3 * w / 4)


def central_mask(h: int, w: int) -> Tensor:
    """The LR mask M of eq. 10 as a (1, 1, h, w) float tensor, 1 = attacked."""
    top, bottom, left, right = mask_bounds(h, w)
    m = torch.zeros(1, 1, h, w)
    m[..., top:bottom, left:right] = 1.0
    return m


def hr_mask(mask: Tensor, scale: int) -> Tensor:
    """M_H: every LR pixel of M becomes a scale x scale block."""
    return mask.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


@dataclass(frozen=True)
class PartialIFGSM(GradientAttack):
    """`x_adv = PartialIFGSM(model, eps=8/255, steps=50, scale=4)(x, hr)`: the step (and any
    random start) masked to the central LR region (eq. 8), the loss only on the SR pixels
    outside its HR counterpart (eq. 9). `method` may be any of the shared loop's. `scale` may
    be left out for a loaded model (it knows its own)."""

    scale: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale == 0 and isinstance(getattr(self.model, "scale", None), int):
            object.__setattr__(self, "scale", self.model.scale)
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ConfigError(f"the partial attack needs the model's scale (an integer >= 1), got {self.scale!r}")

    def _masks(self, x: Tensor) -> dict[str, Tensor]:
        m = central_mask(*x.shape[-2:]).to(x.device)
        return {"mask": m, "loss_mask": 1.0 - hr_mask(m, self.scale)}


# ----------------------------------------------------------------------------- permeation


def ring_distance(h: int, w: int, scale: int) -> np.ndarray:
    """HR-sized int map: 0 inside M_H, else the Chebyshev distance to M_H in LR pixels
    (1 = the first LR pixel's worth of HR pixels around the attacked region)."""
    top, bottom, left, right = (b * scale for b in mask_bounds(h, w))
    ys, xs = np.arange(h * scale)[:, None], np.arange(w * scale)[None, :]
    dy = np.maximum(np.maximum(top - ys, ys - (bottom - 1)), 0)
    dx = np.maximum(np.maximum(left - xs, xs - (right - 1)), 0)
    return np.ceil(np.maximum(dy, dx) / scale).astype(int)


def permeation(sr0: np.ndarray, sr: np.ndarray, rings: np.ndarray, shave: int) -> dict[str, list]:
    """Per ring outside the mask (shaved border excluded): the mean squared error of the Y
    channel (0..255 units, as PSNR), and how many HR pixels the ring has."""
    err = ((rgb_to_y(sr) - rgb_to_y(sr0)) * 255.0) ** 2
    h, w = rings.shape
    keep = np.zeros((h, w), bool)
    keep[shave:h - shave, shave:w - shave] = True
    dist, mse, count = [], [], []
    for r in range(1, int(rings.max()) + 1):
        sel = keep & (rings == r)
        if sel.any():
            dist.append(r)
            mse.append(float(err[sel].mean()))
            count.append(int(sel.sum()))
    return {"distance_lr": dist, "mse_y": mse, "pixels": count}


def half_distance(profile: dict[str, list]) -> int | None:
    """The first ring whose MSE is at most half the first ring's: a one-number decay length."""
    mse, dist = profile["mse_y"], profile["distance_lr"]
    if not mse or mse[0] <= 0:
        return None
    return next((d for d, m in zip(dist, mse) if m <= mse[0] / 2), None)


def mean_profile(profiles: Sequence[dict[str, list]]) -> dict[str, list]:
    """Ring-wise mean over images (each ring over the images large enough to have it)."""
    by_ring: dict[int, list[float]] = {}
    for p in profiles:
        for d, m in zip(p["distance_lr"], p["mse_y"]):
            by_ring.setdefault(d, []).append(m)
    dist = sorted(by_ring)
    return {"distance_lr": dist, "mse_y": [float(np.mean(by_ring[d])) for d in dist],
            "images": [len(by_ring[d]) for d in dist]}


# ----------------------------------------------------------------------------- the dataset runner


@dataclass(frozen=True)
class PartialResult:
    rows: list[Row]
    reference: str
    permeation: dict[float, dict[str, list]]  # alpha -> mean ring profile over images


def run_partial(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    cfg: BasicConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> PartialResult:
    """The partial attack on every image at every budget: one row per (image, budget) with
    SR PSNR outside the mask (psnr_sr), inside it (psnr_sr_inside) and the decay profile."""
    reference = cfg.reference_for(samples)
    rows: list[Row] = []
    profiles: dict[float, list[dict[str, list]]] = {a: [] for a in cfg.alphas}
    for i, s, x0, hr in images(samples, device, progress):
        h, w = s.lr.shape[:2]
        inside = hr_mask(central_mask(h, w), scale)[0, 0].numpy() > 0.5
        rings = ring_distance(h, w, scale)
        sr0 = super_resolve(model, x0)
        xs, evidence = _attack(model, x0, hr, cfg, reference, scale, i)
        for alpha, x, ev in zip(cfg.alphas, xs, evidence):
            sr = super_resolve(model, x[None])
            prof = permeation(to_image(sr0), to_image(sr), rings, scale)
            profiles[alpha].append(prof)
            rows.append({
                "image": s.name, "attack": "partial", "alpha": alpha,
                **measure(x0, x[None], sr0, sr, scale, mask=~inside), **measure_hr(sr, s.hr, scale),
                "psnr_sr_inside": psnr(to_image(sr0), to_image(sr), y=True, shave=scale, mask=inside),
                "mse_ring1": prof["mse_y"][0] if prof["mse_y"] else None,
                "half_distance_lr": half_distance(prof),
                "permeation": prof, "method": cfg.loop_method(cfg.method).label, **ev,
            })
            saver(f"{s.name}_a{alpha * 255:g}", lr=x, sr=sr)
    return PartialResult(rows, reference, {a: mean_profile(p) for a, p in profiles.items()})


def _attack(model: nn.Module, x0: Tensor, hr: Tensor | None, cfg: BasicConfig, reference: str,
            scale: int, image_id: int) -> tuple[Tensor, list[Row]]:
    """All budgets of one image (in batches of cfg.batch), delivered; the loop's evidence per budget."""
    if cfg.method == "strongest":
        raise ConfigError("the strongest ensemble is for the basic attack (sreval attack)")
    attack = PartialIFGSM(model, list(cfg.alphas), cfg.steps, reference, cfg.quantize, cfg.quantize_aware,
                          cfg.norm, cfg.loop_method(cfg.method).restarts, cfg.seed, cfg.precision, cfg.method,
                          cfg.batch, scale=scale)
    x, trace = attack.run(x0, hr, ids=[image_id])
    return x, trace.rows()


__all__ = ["PartialIFGSM", "PartialResult", "run_partial", "central_mask", "hr_mask", "mask_bounds",
           "ring_distance", "permeation", "half_distance", "mean_profile"]
