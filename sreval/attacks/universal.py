"""The universal attack (paper sec. 3.2, eq. 5-7): one perturbation for every image.

X^k = clip01(X0^k + Delta); F(Delta) = mean_k L(X^k, X0^k);
Delta_{n+1} = clip_{-a,a}(Delta_n + (a/T) sgn(grad F(Delta_n))).

A perturbation needs one spatial size, so every image is centre-cropped to the same LR size.
Beyond the paper: a held-out part of the images is never seen while fitting Delta and is
measured separately, since a perturbation is only universal if it works on unseen images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from sreval.attacks.basic import REFERENCES, BasicConfig
from sreval.attacks.common import LossFn, check_steps, in_chunks, mse_to, parse_alpha
from sreval.data import Sample
from sreval.errors import ConfigError
from sreval.evaluate import ImageSaver, Progress, Row, measure, measure_hr, super_resolve, to_image, to_tensor


@dataclass(frozen=True)
class Universal:
    """`x_adv = Universal(model, eps=4/255, steps=50)(x)` for a batch x of equally sized LR
    images; `.perturbation(x, hr)` gives the shared Delta itself, shape (1, C, H, W).

    `reference="clean-sr"` (eq. 1) starts from a small random Delta, since at Delta = 0 its
    gradient is exactly zero; `reference="hr"` (official code) starts from Delta = 0 (eq. 7).
    `batch` = images per forward/backward (None: all; halved on out-of-memory)."""

    model: nn.Module
    eps: float
    steps: int = 50
    reference: str = "clean-sr"
    seed: int = 0
    batch: int | None = None

    def __post_init__(self) -> None:
        parse_alpha([self.eps])
        check_steps(self.steps)
        if self.reference not in REFERENCES:
            raise ConfigError(f"reference must be hr or clean-sr, got {self.reference!r}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")

    def perturbation(self, x: Tensor, hr: Tensor | None = None, progress: Progress | None = None) -> Tensor:
        target = self._target(x, hr)
        eps, step = float(self.eps), float(self.eps) / self.steps
        delta = self._start(x)
        for n in range(self.steps):
            grad = mean_gradient(self.model, x, delta, lambda sl: mse_to(target[sl]), self.batch)
            delta = (delta + step * grad.sign()).clamp(-eps, eps)
            if progress:
                progress(n + 1, self.steps)
        return delta

    def __call__(self, x: Tensor, hr: Tensor | None = None) -> Tensor:
        return apply_perturbation(x, self.perturbation(x, hr))

    def _target(self, x: Tensor, hr: Tensor | None) -> Tensor:
        if self.reference == "hr":
            if hr is None:
                raise ConfigError("reference 'hr' needs the HR images")
            return hr
        with torch.no_grad():
            return in_chunks(lambda sl: self.model(x[sl]), x.shape[0], self.batch)

    def _start(self, x: Tensor) -> Tensor:
        zero = torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        if self.reference == "hr":
            return zero
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.rand(zero.shape, generator=gen, dtype=x.dtype).to(x.device) * 2 - 1
        return noise * (float(self.eps) / self.steps)


def apply_perturbation(x: Tensor, delta: Tensor) -> Tensor:
    """Eq. 5: X^k = clip01(X0^k + Delta) for every image of the batch."""
    return (x + delta).clamp(0.0, 1.0)


def mean_gradient(
    model: nn.Module, x: Tensor, delta: Tensor, loss_for: Callable[[slice], LossFn], batch: int | None
) -> Tensor:
    """grad_Delta of the mean over images of their losses (eq. 6), computed in chunks of
    images whose gradients are summed (a chunk that does not fit is halved)."""

    def part(sl: slice) -> Tensor:
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_for(sl)(model(apply_perturbation(x[sl], d))).sum()
            (g,) = torch.autograd.grad(loss, d)
        return g

    return in_chunks(part, x.shape[0], batch).sum(0, keepdim=True) / x.shape[0]


def quantize_perturbation(delta: Tensor, eps: float) -> Tensor:
    """Delta on the 8-bit grid and inside the budget: added to an 8-bit image, the result is
    again an 8-bit image (a budget below 1/255 rounds to no perturbation at all)."""
    levels = math.floor(eps * 255 + 1e-6)
    return delta.sign() * torch.clamp(torch.round(delta.abs() * 255), max=levels) / 255


# ----------------------------------------------------------------------------- the dataset runner


@dataclass(frozen=True)
class UniversalConfig:
    alphas: tuple[float, ...]
    steps: int = 50
    crop: int | None = None  # LR side of the square centre crop; None = largest fitting all
    holdout: float | None = None  # fraction of the images not used to fit Delta
    reference: str = "auto"
    quantize: bool = True
    seed: int = 0
    batch: int | None = None  # images per forward/backward; None = all

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas))))
        check_steps(self.steps)
        if self.reference not in REFERENCES + ("auto",):
            raise ConfigError(f"reference must be hr, clean-sr or auto, got {self.reference!r}")
        if self.crop is not None and (not isinstance(self.crop, int) or self.crop < 1):
            raise ConfigError(f"crop must be a positive number of LR pixels, got {self.crop!r}")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must be a fraction in (0, 1), got {self.holdout}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")

    def reference_for(self, samples: Sequence[Sample]) -> str:
        return BasicConfig(alphas=self.alphas, reference=self.reference).reference_for(samples)


@dataclass(frozen=True)
class UniversalResult:
    rows: list[Row]
    crop: int
    fit: list[str]
    holdout: list[str]
    reference: str
    perturbations: dict[float, np.ndarray] = field(default_factory=dict)  # alpha -> HxWx3


def fitting_crop(samples: Sequence[Sample], crop: int | None) -> int:
    """The requested LR crop side, checked against every image; default the largest square
    that fits all of them."""
    if crop is None:
        return min(min(s.lr.shape[:2]) for s in samples)
    for s in samples:
        h, w = s.lr.shape[:2]
        if crop > min(h, w):
            raise ConfigError(f"crop {crop} is larger than image {s.name} (LR {w}x{h})")
    return crop


def centre_crop_pair(s: Sample, crop: int, scale: int) -> Sample:
    """Square LR centre crop and the HR crop exactly above it (offsets times scale, so the
    pair stays aligned even when the LR margin is odd)."""
    h, w = s.lr.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    lr = np.ascontiguousarray(s.lr[top:top + crop, left:left + crop])
    hr = None
    if s.hr is not None:
        t, l, c = top * scale, left * scale, crop * scale
        hr = np.ascontiguousarray(s.hr[t:t + c, l:l + c])
    return Sample(s.name, lr, hr)


def split_holdout(n: int, holdout: float | None, seed: int) -> tuple[list[int], list[int]]:
    """(fit, held-out) image indices: a seeded random split, each part non-empty."""
    if holdout is None:
        return list(range(n)), []
    k = round(holdout * n)
    if not 1 <= k <= n - 1:
        raise ConfigError(
            f"holdout {holdout:g} of {n} image(s) leaves {'no image to hold out' if k < 1 else 'no image to fit on'}"
        )
    order = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in order[k:]), sorted(int(i) for i in order[:k])


def run_universal(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    cfg: UniversalConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> UniversalResult:
    """Fit one perturbation per budget on the fit images; rows for every image (group 'fit'
    or 'holdout') with LR/SR PSNR as in the basic attack."""
    reference = cfg.reference_for(samples)
    crop = fitting_crop(samples, cfg.crop)
    crops = [centre_crop_pair(s, crop, scale) for s in samples]
    fit, held = split_holdout(len(crops), cfg.holdout, cfg.seed)
    x0 = torch.cat([to_tensor(s.lr, device) for s in crops])
    hr = torch.cat([to_tensor(s.hr, device) for s in crops]) if reference == "hr" else None
    sr0 = [super_resolve(model, x0[k:k + 1]) for k in range(len(crops))]
    rows: list[Row] = []
    deltas: dict[float, np.ndarray] = {}
    for a_i, alpha in enumerate(cfg.alphas):
        attack = Universal(model, alpha, cfg.steps, reference, cfg.seed, cfg.batch)
        done = a_i * cfg.steps

        def tick(n: int, _total: int) -> None:
            if progress:
                progress(done + n, cfg.steps * len(cfg.alphas))

        delta = attack.perturbation(x0[fit], hr[fit] if hr is not None else None, tick)
        if cfg.quantize:
            delta = quantize_perturbation(delta, alpha)
        deltas[alpha] = to_image(delta)
        rows += _measure_all(model, crops, x0, sr0, delta, alpha, set(held), scale, saver)
    return UniversalResult(rows, crop, [crops[i].name for i in fit], [crops[i].name for i in held],
                           reference, deltas)


def _measure_all(
    model: nn.Module, crops: Sequence[Sample], x0: Tensor, sr0: Sequence[Tensor], delta: Tensor,
    alpha: float, held: set[int], scale: int, saver: ImageSaver,
) -> list[Row]:
    rows: list[Row] = []
    for k, s in enumerate(crops):
        x = apply_perturbation(x0[k:k + 1], delta)
        sr = super_resolve(model, x)
        rows.append({
            "image": s.name, "attack": "universal", "alpha": alpha,
            "group": "holdout" if k in held else "fit",
            **measure(x0[k:k + 1], x, sr0[k], sr, scale), **measure_hr(sr, s.hr, scale),
        })
        saver(f"{s.name}_a{alpha * 255:g}", lr=x, sr=sr)
    return rows


def amplified(delta: np.ndarray, alpha: float) -> np.ndarray:
    """The perturbation as a viewable image: -alpha..alpha stretched to 0..1, zero at grey."""
    return np.clip(delta / (2 * alpha) + 0.5, 0.0, 1.0).astype(np.float32)


__all__ = ["Universal", "UniversalConfig", "UniversalResult", "run_universal", "apply_perturbation",
           "quantize_perturbation", "fitting_crop", "centre_crop_pair", "split_holdout", "amplified"]
