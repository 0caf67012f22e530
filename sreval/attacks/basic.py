"""The basic attack (paper sec. 3.1, eq. 1-3): I-FGSM on the LR input of an SR model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sreval.attacks.common import (
    budget_list, check_precision, check_steps, deliver, ifgsm, in_chunks, mse_to, parse_alpha, per_sample, project,
)
from sreval.data import Sample
from sreval.errors import ConfigError, DataError
from sreval.evaluate import ImageSaver, Progress, Row, measure, measure_hr, super_resolve, to_tensor

REFERENCES = ("hr", "clean-sr")


def check_reference(reference: str) -> str:
    if reference not in REFERENCES:
        raise ConfigError(f"reference must be hr or clean-sr, got {reference!r}")
    return reference


@dataclass(frozen=True)
class IFGSM:
    """`x_adv = IFGSM(model, eps=8/255, steps=50)(x)`.

    `eps` may be a list of budgets: the images are then attacked under every budget at once,
    as one batch, and the result is budget-major (all images for eps[0], then eps[1], ...).
    `reference="clean-sr"` is the paper's eq. 1 (distance to f(X0)), which needs a small random
    start; `reference="hr"` follows the official code (distance to the HR ground truth).
    """

    model: nn.Module
    eps: float | Sequence[float]
    steps: int = 50
    reference: str = "clean-sr"
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        budget_list(self.eps)
        check_steps(self.steps)
        check_reference(self.reference)

    @property
    def budgets(self) -> list[float]:
        return budget_list(self.eps)

    def __call__(self, x: Tensor, hr: Tensor | None = None) -> Tensor:
        n, k = x.shape[0], len(self.budgets)
        return attack_flat(
            self.model, x.repeat(k, 1, 1, 1), torch.tensor(self.budgets).repeat_interleave(n),
            None if hr is None else hr.repeat(k, 1, 1, 1), self.steps, self.reference,
            seeds=[(self.seed, i) for _ in range(k) for i in range(n)], precision=self.precision,
        )


def start_noise(x0: Tensor, eps: Tensor, steps: int, seeds: Sequence[tuple[int, ...]]) -> Tensor:
    """The clean-sr random start, one seed per sample (seed, image id, budget): the same start
    whatever the batch it lands in, so batching and out-of-memory halving change nothing."""
    noise = []
    for s, e in zip(seeds, eps.flatten().tolist()):
        g = torch.Generator().manual_seed(hash((*s, round(e * 255 * 1000))) & 0x7FFF_FFFF_FFFF)
        noise.append(torch.rand(x0.shape[1:], generator=g, dtype=x0.dtype) * 2 - 1)
    return project(x0 + torch.stack(noise).to(x0.device) * eps / steps, x0, eps)


def attack_flat(
    model: nn.Module, x0: Tensor, eps: Tensor | Sequence[float], hr: Tensor | None, steps: int,
    reference: str, *, seeds: Sequence[tuple[int, ...]], precision: str = "fp32",
) -> Tensor:
    """I-FGSM on a flat batch where sample i has its own budget eps[i] (and HR, and seed)."""
    eps_t = per_sample(eps, x0.shape[0], x0)
    if reference == "hr":
        if hr is None:
            raise ConfigError("reference 'hr' needs the HR image")
        return ifgsm(model, x0, eps_t, steps, mse_to(hr), precision=precision)
    with torch.no_grad():
        target = model(x0)
    return ifgsm(model, x0, eps_t, steps, mse_to(target), start=start_noise(x0, eps_t, steps, seeds),
                 precision=precision)


@dataclass(frozen=True)
class BasicConfig:
    alphas: tuple[float, ...]
    steps: int = 50
    reference: str = "auto"
    quantize: bool = True
    seed: int = 0
    batch: int | None = None  # (image, budget) pairs per forward; None = auto (see auto_batch)
    precision: str = "fp32"  # of the attack's forward/backward; measurements stay float32

    def __post_init__(self) -> None:
        check_precision(self.precision)
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas))))
        check_steps(self.steps)
        if self.reference not in REFERENCES + ("auto",):
            raise ConfigError(f"reference must be hr, clean-sr or auto, got {self.reference!r}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")

    def reference_for(self, samples: Sequence[Sample]) -> str:
        has_hr = all(s.hr is not None for s in samples)
        if self.reference == "auto":
            return "hr" if has_hr else "clean-sr"
        if self.reference == "hr" and not has_hr:
            raise DataError("--reference hr needs HR images, and this dataset has LR images only")
        return self.reference


def auto_batch(model: nn.Module, x: Tensor, wanted: int) -> int:
    """How many samples of x's size one forward+backward can hold. On CPU batching buys nothing
    (the budgets of one image are one batch); on CUDA, measured from one sample's peak memory.
    An out-of-memory error later still halves it (in_chunks)."""
    if x.device.type != "cuda" or wanted <= 1:
        return wanted
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    probe = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(probe).square().sum(), probe)
    per_sample_bytes = max(1, torch.cuda.max_memory_allocated(x.device) - base)
    del g, probe
    free, _ = torch.cuda.mem_get_info(x.device)
    return max(1, min(wanted, int(0.7 * free / per_sample_bytes)))


def attack_image(
    model: nn.Module, x0: Tensor, hr: Tensor | None, cfg: BasicConfig, reference: str,
    image_ids: Sequence[int] | None = None,
) -> Tensor:
    """Every budget of the same-size images x0 (N, C, H, W), budget-major (A*N, C, H, W), in
    batches of `cfg.batch` (image, budget) pairs, halved on out-of-memory."""
    n, k = x0.shape[0], len(cfg.alphas)
    ids = list(image_ids) if image_ids is not None else list(range(n))
    flat_x0 = x0.repeat(k, 1, 1, 1)
    flat_hr = hr.repeat(k, 1, 1, 1) if hr is not None else None
    eps = torch.tensor(cfg.alphas, dtype=x0.dtype).repeat_interleave(n)
    seeds = [(cfg.seed, i) for _ in range(k) for i in ids]

    def run(sl: slice) -> Tensor:
        return attack_flat(model, flat_x0[sl], eps[sl], None if flat_hr is None else flat_hr[sl],
                           cfg.steps, reference, seeds=seeds[sl], precision=cfg.precision)

    x = in_chunks(run, n * k, cfg.batch or auto_batch(model, x0, n * k))
    if cfg.quantize:
        x = deliver(x, flat_x0, per_sample(eps, n * k, x))
    return x


def same_size_groups(samples: Sequence[Sample], per_group: int) -> list[list[int]]:
    """Indices of samples grouped by LR size (order kept within a group), at most per_group each."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(samples):
        by_shape.setdefault(s.lr.shape + (s.hr is None,), []).append(i)
    return [ids[j:j + per_group] for ids in by_shape.values() for j in range(0, len(ids), per_group)]


def run_basic(
    model: nn.Module,
    samples: Sequence[Sample],
    scale: int,
    cfg: BasicConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> list[Row]:
    """The basic attack on every image at every budget: one row per (image, budget)."""
    reference = cfg.reference_for(samples)
    # CPU: one image at a time (batching buys nothing); GPU: same-size images share a batch.
    per_group = 1 if device.type == "cpu" else max(1, (cfg.batch or 64) // len(cfg.alphas))
    rows: dict[int, list[Row]] = {}
    for ids in same_size_groups(samples, per_group):
        group = [samples[i] for i in ids]
        x0 = torch.cat([to_tensor(s.lr, device) for s in group])
        hr = torch.cat([to_tensor(s.hr, device) for s in group]) if group[0].hr is not None else None
        xs = attack_image(model, x0, hr, cfg, reference, image_ids=ids)
        for j, (i, s) in enumerate(zip(ids, group)):
            rows[i] = _measure_image(model, s, x0[j:j + 1], xs[j::len(ids)], cfg, scale, saver)
        if progress:
            progress(len(rows), len(samples))
    return [r for i in sorted(rows) for r in rows[i]]


def _measure_image(model: nn.Module, s: Sample, x0: Tensor, xs: Tensor, cfg: BasicConfig,
                   scale: int, saver: ImageSaver) -> list[Row]:
    """The rows of one image: LR/SR PSNR per budget (and against HR where there is one)."""
    sr0 = super_resolve(model, x0)
    out = []
    for alpha, x in zip(cfg.alphas, xs):
        sr = super_resolve(model, x[None])
        out.append({"image": s.name, "attack": "basic", "alpha": alpha,
                    **measure(x0, x[None], sr0, sr, scale), **measure_hr(sr, s.hr, scale)})
        saver(f"{s.name}_a{alpha * 255:g}", lr=x, sr=sr)
    saver(s.name, sr_clean=sr0)
    return out


__all__ = ["IFGSM", "BasicConfig", "attack_flat", "attack_image", "run_basic", "REFERENCES"]
