"""A gradient-free attack for models onnx2torch cannot convert: the Square attack.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020, l_inf version, adapted to SR: it maximises
the mean squared error between f(X) and the clean output f(X0) (the paper's eq. 1, so no
ground truth is needed) using only forward runs of the onnxruntime reference.

Start: vertical stripes, every column of every channel moved by +-alpha. Each query then
redraws one random square window (the same place in all channels, an independent +-alpha per
channel) at a vertex of the l_inf ball, and keeps it only where the loss grows. The window
side follows the paper's schedule: sqrt(p * H * W) with p = p_init halved at 10, 50, 200, 500,
1000, 2000, 4000, 6000 and 8000 of 10,000 queries (rescaled to the query budget).

It is WEAKER than the gradient attack (I-FGSM): random search finds a fraction of the damage
a gradient finds in 50 steps, so its SR PSNR is an upper bound on what a white-box attacker
leaves, and reports say so (`note`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sreval.config import ATTACK_METHODS, parse_alpha
from sreval.attacks.common import deliver, per_sample
from sreval.data import Sample
from sreval.errors import ConfigError, ModelError, ParityError, UnsupportedOperatorError
from sreval.evaluation import ImageSaver, Progress, Row, images, measure, measure_hr, super_resolve
from sreval.model import ConversionError

METHODS = ATTACK_METHODS + ("square", "auto")  # the gradient attacks, the gradient-free one, or auto
NOTE = ("square: gradient-free Square attack (Andriushchenko et al. 2020) through onnxruntime only; "
        "weaker than the gradient attack (I-FGSM), so its SR PSNR overstates robustness: an upper "
        "bound on the damage a white-box attacker leaves")
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10,000 queries


@dataclass(frozen=True)
class SquareConfig:
    alphas: tuple[float, ...]
    queries: int = 500
    p_init: float = 0.05
    quantize: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas))))
        if isinstance(self.queries, bool) or not isinstance(self.queries, int) or self.queries < 1:
            raise ConfigError(f"queries must be an integer >= 1, got {self.queries!r}")
        if not 0 < self.p_init <= 1:
            raise ConfigError(f"p_init must lie in (0, 1], got {self.p_init}")


def window_fraction(p_init: float, query: int, queries: int) -> float:
    """Fraction of the image one window covers at `query` (the paper's schedule)."""
    progress = int(query / queries * 10000)
    return p_init / 2 ** sum(progress > h for h in _HALVINGS)


def _loss(model: nn.Module, x: Tensor, ref: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(x) - ref).square().flatten(1).mean(1)


def square_attack(model: nn.Module, x0: Tensor, eps: Tensor, queries: int, *, p_init: float = 0.05,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Square attack on a batch (each sample its own budget in `eps`, shape (B, 1, 1, 1)).
    Returns the attacked batch and its final loss (MSE to the clean output, per sample);
    `queries` counts the forward runs, the initial one included."""
    n, c, h, w = x0.shape
    with torch.no_grad():
        ref = model(x0)
    stripes = torch.randint(0, 2, (n, c, 1, w), generator=generator).to(x0) * 2 - 1
    x = (x0 + eps * stripes).clamp(0.0, 1.0)
    loss = _loss(model, x, ref)
    for q in range(1, queries):
        side = int(round(math.sqrt(window_fraction(p_init, q, queries) * h * w)))
        side = min(max(side, 1), h, w)
        cand = x.clone()
        for b in range(n):
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            signs = torch.randint(0, 2, (c, 1, 1), generator=generator).to(x0) * 2 - 1
            win = (..., slice(top, top + side), slice(left, left + side))
            cand[b][win] = (x0[b][win] + eps[b] * signs).clamp(0.0, 1.0)
        new = _loss(model, cand, ref)
        better = new > loss
        x = torch.where(better.view(n, 1, 1, 1), cand, x)
        loss = torch.where(better, new, loss)
    return x, loss


def run_square(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    cfg: SquareConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> list[Row]:
    """The Square attack on every image at every budget (all budgets as one batch): one row
    per (image, budget), attack 'square', measured like the basic attack."""
    gen = torch.Generator().manual_seed(cfg.seed)
    k = len(cfg.alphas)
    rows: list[Row] = []
    for _, s, x0, _ in images(samples, device, progress):
        sr0 = super_resolve(model, x0)
        batch = x0.expand(k, -1, -1, -1)
        eps = per_sample(list(cfg.alphas), k, batch)
        xs, _ = square_attack(model, batch, eps, cfg.queries, p_init=cfg.p_init, generator=gen)
        if cfg.quantize:
            xs = deliver(xs, batch, eps)
        for alpha, x in zip(cfg.alphas, xs):
            sr = super_resolve(model, x[None])
            rows.append({
                "image": s.name, "attack": "square", "alpha": alpha, "queries": cfg.queries,
                **measure(x0, x[None], sr0, sr, scale), **measure_hr(sr, s.hr, scale),
            })
            saver(f"{s.name}_a{alpha * 255:g}", lr=x, sr=sr)
        saver(s.name, sr_clean=sr0)
    return rows


def choose_method(model: Any, method: str) -> tuple[str, str | None]:
    """(a gradient method | 'square', why square where it was not asked for). A gradient
    method on a model that onnx2torch cannot convert is refused with the reason and the way
    out; 'auto' is ifgsm, or square where there is no conversion."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "square":
        return "square", None
    try:
        model.check_parity()
    except (UnsupportedOperatorError, ConversionError, ParityError) as e:
        if method == "auto":
            return "square", f"no PyTorch conversion ({e}), so no gradient attack: fell back to square"
        raise ModelError(f"{e}; the gradient attack needs a PyTorch conversion: --method square runs a "
                         f"gradient-free attack through onnxruntime (weaker)") from None
    return ("ifgsm" if method == "auto" else method), None


__all__ = ["METHODS", "NOTE", "SquareConfig", "square_attack", "run_square", "choose_method",
           "window_fraction"]
