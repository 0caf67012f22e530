"""What every attack shares: budgets, the I-FGSM step and projection, the 8-bit delivery,
and memory-adaptive batching."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch
from torch import Tensor, nn

from sreval.errors import ConfigError

LossFn = Callable[[Tensor], Tensor]  # SR batch -> per-sample loss (B,)


def parse_alpha(text: str | float | Sequence[str | float]) -> list[float]:
    """Budgets from '1/255,8/255', '0.0314' or a list of those; each must lie in (0, 1]."""
    items = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, Sequence) else [text]
    out: list[float] = []
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        try:
            value = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"bad budget {s!r}: write it as 8/255 or 0.0314") from None
        if not math.isfinite(value) or not 0 < value <= 1:
            raise ConfigError(f"budget {s} must lie in (0, 1] (image values are in [0, 1])")
        out.append(value)
    if not out:
        raise ConfigError("no budget given (--alpha)")
    return out


def budget_list(eps: float | Sequence[float]) -> list[float]:
    """The budget(s) an attack object was given, validated, as a list."""
    return parse_alpha([eps] if isinstance(eps, (int, float)) else list(eps))


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def per_sample(eps: Tensor | float | Sequence[float], n: int, like: Tensor) -> Tensor:
    """Budgets as a (n, 1, 1, 1) tensor so one batch can hold several budgets."""
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(n)
    if e.numel() != n:
        raise ConfigError(f"{e.numel()} budgets for a batch of {n}")
    return e.reshape(n, 1, 1, 1)


def project(x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """Paper eq. 2-3: clip to the image range, then to the l_inf ball around x0."""
    x = x.clamp(0.0, 1.0)
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps)


def deliver(x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """Round the attacked LR to 8 bits, as an attacker delivers an image file, staying on the
    8-bit grid AND within the budget: the nearest grey level inside [x0 - eps, x0 + eps] (a
    budget that is not a multiple of 1/255 is thus used down to its last whole grey level)."""
    lo = torch.ceil(((x0 - eps) * 255.0).clamp(min=0.0) - 1e-4) / 255.0
    hi = torch.floor(((x0 + eps) * 255.0).clamp(max=255.0) + 1e-4) / 255.0
    return torch.minimum(torch.maximum(torch.round(x * 255.0) / 255.0, lo), hi)


def random_start(x0: Tensor, eps: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """A small uniform start in [-scale*eps, scale*eps]: with the clean SR as reference the
    loss gradient at x0 is exactly zero, and sign(0) = 0 would never move."""
    noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) * 2 - 1
    return project(x0 + noise * eps * scale, x0, eps)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(x: Tensor, precision: str) -> contextlib.AbstractContextManager[object]:
    """Mixed precision for the attack's forward/backward (the loss stays float32)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)


def ifgsm(
    model: nn.Module,
    x0: Tensor,
    eps: Tensor,
    steps: int,
    loss_fn: LossFn,
    *,
    start: Tensor | None = None,
    grad_mask: Tensor | None = None,
    descend: bool = False,
    precision: str = "fp32",
) -> Tensor:
    """The I-FGSM loop of the paper (eq. 2-3, 8, 11), for a batch whose samples may each have
    their own budget `eps` (B,1,1,1). The loss is summed over samples, so each sample gets its
    own gradient. Returns X_T, detached."""
    step = eps / steps * (-1.0 if descend else 1.0)
    x = (x0 if start is None else start).detach()
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():  # callers may sit in no_grad (evaluation code)
            with autocast(x, precision):
                sr = model(x)
            loss = loss_fn(sr.float()).sum()
            (grad,) = torch.autograd.grad(loss, x)
        direction = grad.sign()
        if grad_mask is not None:
            direction = direction * grad_mask
        x = project(x.detach() + step * direction, x0, eps)
    return x.detach()


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
