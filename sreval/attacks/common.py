"""What every attack shares: budgets, the objective the shared loop (optim.py) maximises, the
8-bit delivery, and memory-adaptive batching."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from sreval.attacks.optim import ValueAndGrad, l2_norm
from sreval.config import check_precision
from sreval.errors import ConfigError

LossFn = Callable[[Tensor], Tensor]  # SR batch -> per-sample loss (B,)


def per_sample(eps: Tensor | float | Sequence[float], n: int, like: Tensor) -> Tensor:
    """Budgets as a (n, 1, 1, 1) tensor so one batch can hold several budgets."""
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(n)
    if e.numel() != n:
        raise ConfigError(f"{e.numel()} budgets for a batch of {n}")
    return e.reshape(n, 1, 1, 1)


def deliver(x: Tensor, x0: Tensor, eps: Tensor, norm: str = "linf") -> Tensor:
    """Round the attacked LR to 8 bits, as an attacker delivers an image file, staying on the
    8-bit grid AND within the budget. l_inf: the nearest grey level inside [x0 - eps, x0 + eps]
    (a budget that is not a multiple of 1/255 is used down to its last whole grey level).
    l_2: the nearest grey levels, or, where that leaves the ball, the grey level of each pixel
    between x and x0 (which never lengthens the perturbation when x0 is 8-bit)."""
    if norm == "linf":
        lo = torch.ceil(((x0 - eps) * 255.0).clamp(min=0.0) - 1e-4) / 255.0
        hi = torch.floor(((x0 + eps) * 255.0).clamp(max=255.0) + 1e-4) / 255.0
        return torch.minimum(torch.maximum(torch.round(x * 255.0) / 255.0, lo), hi)
    nearest = (torch.round(x * 255.0) / 255.0).clamp(0.0, 1.0)
    toward = torch.where(x > x0, torch.floor(x * 255.0 + 1e-4), torch.ceil(x * 255.0 - 1e-4)) / 255.0
    over = (l2_norm(nearest - x0) > eps * (1 + 1e-6)).reshape(-1, *([1] * (x.dim() - 1)))
    return torch.where(over, toward.clamp(0.0, 1.0), nearest)


def straight_through(x: Tensor, rounded: Tensor) -> Tensor:
    """`rounded` in the forward pass, identity in the backward pass (BPDA, Athalye et al.)."""
    return x + (rounded - x).detach()


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # of each precision


def autocast(x: Tensor, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision for the attack's forward/backward (the loss stays float32)."""
    dtype = DTYPES[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)


def objective(
    model: nn.Module, loss_fn: LossFn, *, precision: str = "fp32", sign: float = 1.0,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[ValueAndGrad, Callable[[Tensor], Tensor]]:
    """(value_and_grad, value) of sign * loss_fn(model(transform(x))) for the shared loop.
    `transform` is where the 8-bit delivery enters with a straight-through gradient; the
    loss stays float32 under mixed precision. Callers may sit in no_grad (evaluation code)."""

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            inp = x if transform is None else transform(x)
            with autocast(x, precision):
                sr = model(inp)
            v = loss_fn(sr.float()) * sign
            (g,) = torch.autograd.grad(v.sum(), x)
        return v.detach(), g

    def value(x: Tensor) -> Tensor:
        with torch.no_grad(), autocast(x, precision):
            sr = model(x if transform is None else transform(x))
        return loss_fn(sr.float()) * sign

    return value_and_grad, value


def mse_to(reference: Tensor, mask: Tensor | None = None) -> LossFn:
    """Per-sample mean squared error to a reference (optionally on a mask of pixels).
    Same sign of gradient as the paper's L2 norm, and defined (zero) where the norm is not."""

    def loss(sr: Tensor) -> Tensor:
        d = (sr - reference).square()
        if mask is not None:
            d = d * mask
        return d.flatten(1).mean(1)

    return loss


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def in_chunks(fn: Callable[[slice], Tensor], n: int, chunk: int | None = None) -> Tensor:
    """Run fn over [0, n) in chunks; an out-of-memory error halves the chunk and goes on,
    so a batch that does not fit is never lost, only split."""
    size = max(1, chunk or n)
    parts: list[Tensor] = []
    i = 0
    while i < n:
        try:
            parts.append(fn(slice(i, min(n, i + size))))
            i += size
        except RuntimeError as e:
            if not is_oom(e) or size == 1:
                raise
            size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return torch.cat(parts)
