"""What every attack shares: budgets, the objective the shared loop (optim.py) maximises, the
8-bit delivery, one attack on a flat batch (`attack_flat`, which the attack objects and the
converged `strongest` drive), and memory-adaptive batching."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from sreval.attacks.optim import Trace, ValueAndGrad, l2_norm, optimize
from sreval.config import MEASURED, Method, check_precision
from sreval.errors import ConfigError
from sreval.io import quantize, rgb_to_y

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


def measured_mse(reference: Tensor, shave: int) -> LossFn:
    """The error the SR PSNR measures (metrics.psnr of evaluation.super_resolve's outputs), per
    sample: MSE on the MATLAB Y channel of the SR clipped and rounded to 8 bits (the rounding
    straight-through), `shave` border pixels dropped, against `reference` (the clean SR as it
    is measured). The loss of the `psnr-sr` ensemble member."""
    crop = (..., slice(shave, -shave or None), slice(shave, -shave or None))
    ref_y = rgb_to_y(quantize(reference))[crop]

    def loss(sr: Tensor) -> Tensor:
        clipped = sr.clamp(0.0, 1.0)
        d = rgb_to_y(straight_through(clipped, quantize(clipped)))[crop] - ref_y
        return d.square().flatten(1).mean(1)

    return loss


EOT_SAMPLES = 8  # runs averaged per forward pass of a model with random output


def randomness(model: nn.Module, x: Tensor) -> float:
    """How far two runs of the model on the same input differ (0 for a deterministic model):
    dropout left on, or noise drawn inside the graph."""
    with torch.no_grad():
        return float((model(x) - model(x)).abs().max())


class Expectation(nn.Module):
    """A model with random output as the attack sees it: the mean of `samples` runs per forward
    pass, so the gradient is that of the expected output (expectation over transformation,
    Athalye et al. 2018) and the measured SR is the expected SR."""

    def __init__(self, model: nn.Module, samples: int = EOT_SAMPLES) -> None:
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)


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


def start_radius(method: Method, reference: str, eps: Tensor, steps: int, quantize: bool) -> Tensor | None:
    """The start of ifgsm/mifgsm per sample, as a fraction of its budget: none against HR;
    against the clean SR a small random one (its gradient at X0 is exactly zero): one step,
    a/T, or one grey level where the loss sees the 8-bit rounding (a start of less than half a
    level would round back to X0, where the gradient is zero again)."""
    if reference == "hr":
        return None
    radius = torch.full_like(eps, 1.0 / steps)
    if quantize and method.quantize_aware:
        radius = torch.maximum(radius, 1.0 / 255 / eps)
    return radius.clamp(max=1.0)


def delivered(x: Tensor, x0: Tensor, eps: Tensor, norm: str, mask: Tensor | None = None) -> Tensor:
    """The 8-bit file an attacker delivers (common.deliver); outside a mask nothing changes,
    not even by rounding (an LR that is not 8-bit stays as it was there)."""
    q = deliver(x, x0, eps, norm)
    return q if mask is None else x0 + (q - x0) * mask


def attack_flat(
    model: nn.Module, x0: Tensor, eps: Tensor | Sequence[float], hr: Tensor | None, steps: int,
    reference: str, *, seeds: Sequence[tuple[int, ...]], method: Method = Method(), quantize: bool = False,
    precision: str = "fp32", mask: Tensor | None = None, loss_mask: Tensor | None = None,
    descend: bool = False, on_step: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Trace]:
    """One attack on a flat batch where sample i has its own budget eps[i] (and HR, and seed):
    (X returned by the method, not yet rounded; its trace). The loss is the MSE to the
    reference (`hr`, or the clean SR f(X0); `psnr-sr`: the measured error, common.measured_mse),
    on `loss_mask` pixels only where given; `mask` confines the perturbation (partial attack);
    `descend` minimises the distance to `hr` instead (targeted attack). With `quantize` and
    `method.quantize_aware`, the loss sees the delivered 8-bit image (straight-through
    gradient)."""
    eps_t = per_sample(eps, x0.shape[0], x0)
    if reference == "hr" or descend:
        if hr is None:
            raise ConfigError("reference 'hr' needs the HR image" if not descend else "a target HR image is needed")
        target = hr
    else:
        with torch.no_grad():
            target = model(x0)
    if reference == MEASURED and loss_mask is not None:
        raise ConfigError(f"the {MEASURED} loss measures the whole SR image: it takes no loss mask")

    def loss_to(target: Tensor) -> LossFn:
        if reference == MEASURED:
            return measured_mse(target, target.shape[-1] // x0.shape[-1])
        return mse_to(target, loss_mask)

    def run(x0: Tensor, eps: Tensor, target: Tensor, seeds: Sequence[tuple[int, ...]], radius: Tensor | None,
            on_step: Callable[[int, int], None] | None = None) -> tuple[Tensor, Trace]:
        transform = None
        if quantize and method.quantize_aware:
            def transform(x: Tensor) -> Tensor:
                return straight_through(x, delivered(x, x0, eps, method.norm, mask))
        vg, value = objective(model, loss_to(target), precision=precision, transform=transform,
                              sign=-1.0 if descend else 1.0)
        return optimize(vg, x0, eps, steps, method, seeds=seeds, final_value=value, start_radius=radius,
                        mask=mask, on_step=on_step)

    radius = None if descend else start_radius(method, reference, eps_t, steps, quantize)
    x, trace = run(x0, eps_t, target, seeds, radius, on_step)
    stuck = (trace.bad_grad >= steps * method.restarts).nonzero().flatten()
    if radius is None and len(stuck):
        # A zero gradient at X0 (an identity model against its own HR, a flat region) would
        # read as "infinitely robust": re-run those samples from a small random start, as the
        # clean-sr reference does, and say so in their rows (the masks broadcast: kept whole).
        eps_s = eps_t[stuck]
        x2, t2 = run(x0[stuck], eps_s, target[stuck], [seeds[i] for i in stuck.tolist()],
                     start_radius(method, "clean-sr", eps_s, steps, quantize))
        x = x.index_copy(0, stuck, x2)
        trace = trace.replace_samples(stuck, t2)
    return x, trace
