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

from sreval.attacks.basic import GradientAttack
from sreval.config import BasicConfig, METHODS, REFERENCES, check_batch, check_steps, parse_alpha
from sreval.attacks.common import autocast, in_chunks, start_radius, straight_through
from sreval.attacks.optim import Trace, l2_norm, optimize, sample_seeds
from sreval.data import Sample
from sreval.errors import ConfigError
from sreval.evaluation import ImageSaver, Progress, Row, measure, measure_hr, super_resolve, to_image, to_tensor


UNIVERSAL_LOSSES = ("paper", "official")


def image_losses(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-image loss of eq. 6's sum: `paper` = eq. 1's L2 norm ||f(X^k) - R^k||_2 (so each
    image's gradient is weighted by 1 / its norm), `official` = the per-image MSE of the
    official code (tf-sr-attack). The two change the sign of the summed gradient."""
    if kind not in UNIVERSAL_LOSSES:
        raise ConfigError(f"universal loss must be paper (eq. 6) or official, got {kind!r}")

    def loss(sr: Tensor, ref: Tensor) -> Tensor:
        sq = (sr - ref).square().flatten(1)
        # the clamp keeps the norm's gradient finite where f(X^k) = R^k (it is zero there)
        return sq.sum(1).clamp_min(1e-24).sqrt() if kind == "paper" else sq.mean(1)

    return loss


@dataclass(frozen=True)
class Universal(GradientAttack):
    """`x_adv = Universal(model, eps=4/255, steps=50)(x, hr)` for a batch x of equally sized LR
    images; `.perturbation(x, hr)` gives the shared Delta itself, shape (1, C, H, W), and
    `.fit(x, hr)` also the loop's trace.

    Eq. 5-7 through the shared loop: the variable is Delta (a ball around 0, no box: eq. 5's
    clip01 acts on each image), the objective F(Delta) = mean_k L(X^k). `loss` 'paper' is
    eq. 6 (mean of L2 norms), 'official' the official code's mean of MSEs. With the clean-sr
    reference the start is a small random Delta (the gradient at Delta = 0 is exactly zero);
    with hr it is Delta = 0 (eq. 7). `batch` = images per forward/backward (None: all;
    halved on out-of-memory). Delivered (`quantize`): Delta on the 8-bit grid."""

    loss: str = "paper"
    batch: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.budgets) != 1:
            raise ConfigError("a universal perturbation has one budget: make one Universal per budget")
        image_losses(self.loss)
        check_batch(self.batch)

    def fit(self, x: Tensor, hr: Tensor | None = None, progress: Progress | None = None) -> tuple[Tensor, Trace]:
        """(Delta, delivered where `quantize`; the loop's trace of F)."""
        reference = self.reference if self.reference != "auto" else ("hr" if hr is not None else "clean-sr")
        target = self._target(x, hr, reference)
        eps = float(self.budgets[0])
        method = self.as_method()
        zero = torch.zeros((1,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        eps_t = torch.full((1, 1, 1, 1), eps, dtype=x.dtype, device=x.device)
        transform = None
        if self.quantize and method.quantize_aware:
            def transform(d: Tensor) -> Tensor:
                return straight_through(d, quantize_perturbation(d, eps, self.norm))
        vg, value = self._objective(x, target, transform)
        radius = start_radius(method, reference, eps_t, self.steps, self.quantize)
        delta, trace = optimize(vg, zero, eps_t, self.steps, method, seeds=sample_seeds(self.seed, [0], [eps]),
                                start_radius=radius, box=None, final_value=value, on_step=progress)
        return (quantize_perturbation(delta, eps, self.norm) if self.quantize else delta), trace

    def perturbation(self, x: Tensor, hr: Tensor | None = None, progress: Progress | None = None) -> Tensor:
        return self.fit(x, hr, progress)[0]

    def run(self, x: Tensor, hr: Tensor | None = None, ids: Sequence[int] | None = None) -> tuple[Tensor, Trace]:
        delta, trace = self.fit(x, hr)
        return apply_perturbation(x, delta), trace

    def _target(self, x: Tensor, hr: Tensor | None, reference: str) -> Tensor:
        if reference == "hr":
            if hr is None:
                raise ConfigError("reference 'hr' needs the HR images")
            return hr
        with torch.no_grad():
            return in_chunks(lambda sl: self.model(x[sl]), x.shape[0], self.batch)

    def _objective(self, x: Tensor, target: Tensor, transform: Callable[[Tensor], Tensor] | None
                   ) -> tuple[Callable[[Tensor], tuple[Tensor, Tensor]], Callable[[Tensor], Tensor]]:
        """F(Delta) and its gradient, summed over chunks of images (a chunk that does not fit
        is halved), the mean taken over all K images."""
        per_image, k = image_losses(self.loss), x.shape[0]

        def value_and_grad(delta: Tensor) -> tuple[Tensor, Tensor]:
            values: list[Tensor] = []

            def part(sl: slice) -> Tensor:
                d = delta.detach().requires_grad_(True)
                with torch.enable_grad(), autocast(x, self.precision):
                    sr = self.model(apply_perturbation(x[sl], d if transform is None else transform(d)))
                with torch.enable_grad():
                    v = per_image(sr.float(), target[sl]).sum() / k
                    (g,) = torch.autograd.grad(v, d)
                values.append(v.detach())
                return g

            g = in_chunks(part, k, self.batch).sum(0, keepdim=True)
            return torch.stack(values).sum().reshape(1), g

        def value(delta: Tensor) -> Tensor:
            d = delta if transform is None else transform(delta)
            with torch.no_grad(), autocast(x, self.precision):
                parts = in_chunks(lambda sl: per_image(self.model(apply_perturbation(x[sl], d)).float(),
                                                       target[sl]), k, self.batch)
            return parts.sum().reshape(1) / k

        return value_and_grad, value


def apply_perturbation(x: Tensor, delta: Tensor) -> Tensor:
    """Eq. 5: X^k = clip01(X0^k + Delta) for every image of the batch."""
    return (x + delta).clamp(0.0, 1.0)


def quantize_perturbation(delta: Tensor, eps: float, norm: str = "linf") -> Tensor:
    """Delta on the 8-bit grid and inside the budget: added to an 8-bit image, the result is
    again an 8-bit image (an l_inf budget below 1/255 rounds to no perturbation at all). l_2:
    the nearest levels, or each value's level towards zero where that leaves the ball."""
    if norm == "linf":
        levels = math.floor(eps * 255 + 1e-6)
        return delta.sign() * torch.clamp(torch.round(delta.abs() * 255), max=levels) / 255
    nearest = torch.round(delta * 255) / 255
    toward = torch.trunc(delta * 255 + delta.sign() * 1e-4) / 255
    over = (l2_norm(nearest) > eps * (1 + 1e-6)).reshape(-1, *([1] * (delta.dim() - 1)))
    return torch.where(over, toward, nearest)


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
    loss: str = "paper"  # eq. 6 (mean of L2 norms) or 'official' (mean of MSEs)
    method: str = "ifgsm"
    norm: str = "linf"
    restarts: int = 1
    quantize_aware: bool = False

    def __post_init__(self) -> None:
        image_losses(self.loss)
        if self.method not in METHODS:
            raise ConfigError(f"the universal attack's method must be one of {', '.join(METHODS)}, got {self.method!r}")
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas), self.norm)))
        check_steps(self.steps)
        if self.reference not in REFERENCES + ("auto",):
            raise ConfigError(f"reference must be hr, clean-sr or auto, got {self.reference!r}")
        if self.crop is not None and (not isinstance(self.crop, int) or self.crop < 1):
            raise ConfigError(f"crop must be a positive number of LR pixels, got {self.crop!r}")
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise ConfigError(f"holdout must be a fraction in (0, 1), got {self.holdout}")
        check_batch(self.batch)

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
        attack = Universal(model, alpha, cfg.steps, reference, cfg.quantize, cfg.quantize_aware, cfg.norm,
                           cfg.restarts if cfg.method in ("pgd", "apgd") else 1, cfg.seed, method=cfg.method,
                           loss=cfg.loss, batch=cfg.batch)
        done = a_i * cfg.steps

        def tick(n: int, _total: int) -> None:
            if progress:
                progress(done + n, cfg.steps * len(cfg.alphas))

        delta, trace = attack.fit(x0[fit], hr[fit] if hr is not None else None, tick)
        deltas[alpha] = to_image(delta)
        evidence = {"method": attack.as_method().label, "loss": cfg.loss, **trace.rows()[0]}
        rows += [{**r, **evidence} for r in _measure_all(model, crops, x0, sr0, delta, alpha, set(held), scale, saver)]
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


__all__ = ["Universal", "UNIVERSAL_LOSSES", "image_losses", "UniversalConfig", "UniversalResult", "run_universal", "apply_perturbation",
           "quantize_perturbation", "fitting_crop", "centre_crop_pair", "split_holdout", "amplified"]
