"""The basic attack (paper sec. 3.1, eq. 1-3): I-FGSM on the LR input of an SR model, and the
stronger attacks of the same loop (PGD, APGD, momentum I-FGSM, the `strongest` ensemble)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sreval.attacks.common import attack_flat, delivered, in_chunks, mse_to, per_sample
from sreval.attacks.optim import Trace, sample_seeds
from sreval.attacks.strongest import converge_member
from sreval.config import (
    EFFORTS, SHIFT, BasicConfig, Method, budget_list, check_batch, check_precision, check_reference, check_steps,
    split_member,
)
from sreval.data import Sample
from sreval.errors import ConfigError
from sreval.evaluation import ImageSaver, Progress, Row, measure, measure_hr, super_resolve, to_tensor

@dataclass(frozen=True)
class GradientAttack:
    """The one base of the attack objects: `x_adv = IFGSM(model, eps=8/255, steps=50)(x, hr)`.

    `model` is any `nn.Module` on RGB NCHW [0, 1] (a loaded sreval model or your own). `eps`
    may be a list of budgets: the images are then attacked under every budget at once, as one
    batch, and the result is budget-major (all images for eps[0], then eps[1], ...).
    The defaults are the CLI's: `reference="auto"` (distance to `hr` when given, as the
    official code; else eq. 1's distance to f(X0) from a small random start), and the result
    delivered as an 8-bit image (`quantize`), rounded at the end; `quantize_aware` optimises
    through that rounding instead (straight-through; measured on CARN-M, Set5: I-FGSM 0.5 dB
    weaker with it, APGD the same). `.run()` also returns the loop's trace."""

    model: nn.Module
    eps: float | Sequence[float]
    steps: int = 50
    reference: str = "auto"
    quantize: bool = True
    quantize_aware: bool = False
    norm: str = "linf"
    restarts: int = 1
    seed: int = 0
    precision: str = "fp32"
    method: str = "ifgsm"
    batch: int | None = None  # (image, budget) pairs per forward+backward; None: sized from memory

    def __post_init__(self) -> None:
        check_precision(self.precision)
        budget_list(self.eps, self.norm)
        check_steps(self.steps)
        check_batch(self.batch)
        if self.reference != "auto":
            check_reference(self.reference)
        self.as_method()

    def as_method(self) -> Method:
        return Method(self.method, self.norm, self.restarts, quantize_aware=self.quantize_aware)

    @property
    def budgets(self) -> list[float]:
        return budget_list(self.eps, self.norm)

    def run(self, x: Tensor, hr: Tensor | None = None, ids: Sequence[int] | None = None,
            on_pairs: Callable[[int], None] | None = None) -> tuple[Tensor, Trace]:
        """(attacked LR, budget-major; the loop's trace): every budget of the same-size images
        x (N, C, H, W) as (A*N, C, H, W), in batches of `batch` (image, budget) pairs, halved on
        out-of-memory. `ids` name the images for their random starts (default 0..N-1): image
        i's start never depends on its batch. `on_pairs(k)` is called after each step of k pairs.
        This is the one driver of the gradient attacks: every job attacks through it."""
        n, k = x.shape[0], len(self.budgets)
        ids = list(range(n)) if ids is None else list(ids)
        reference = self.reference if self.reference != "auto" else ("hr" if hr is not None else "clean-sr")
        eps = torch.tensor(self.budgets, dtype=x.dtype).repeat_interleave(n)
        x0 = x.repeat(k, 1, 1, 1)
        flat_hr = None if hr is None else hr.repeat(k, 1, 1, 1)
        seeds = sample_seeds(self.seed, ids * k, eps.tolist())
        masks = self._masks(x)
        traces: list[Trace] = []

        def chunk(sl: slice) -> Tensor:
            size = len(range(*sl.indices(n * k)))
            tick = None if on_pairs is None else (lambda _done, _total: on_pairs(size))
            xs, trace = attack_flat(
                self.model, x0[sl], eps[sl], None if flat_hr is None else flat_hr[sl], self.steps, reference,
                seeds=seeds[sl], method=self.as_method(), quantize=self.quantize, precision=self.precision,
                descend=self._descend, on_step=tick, **masks)
            traces.append(trace)  # after success only: a chunk halved on out-of-memory is redone
            return xs

        xs = in_chunks(chunk, n * k, self.batch or auto_batch(self.model, x, n * k))
        if self.quantize:
            xs = delivered(xs, x0, per_sample(eps, n * k, x0), self.norm, masks.get("mask"))
        return xs, Trace.cat(traces)

    _descend = False  # the targeted attack descends towards its target

    def _masks(self, x: Tensor) -> dict[str, Tensor]:
        """`mask` (LR, where the perturbation may be) and `loss_mask` (SR, what the loss sees)."""
        return {}

    def __call__(self, x: Tensor, hr: Tensor | None = None) -> Tensor:
        return self.run(x, hr)[0]


@dataclass(frozen=True)
class IFGSM(GradientAttack):
    """The paper's basic attack (eq. 1-3): T sign steps of a/T; returns X_T."""

    method: str = "ifgsm"


@dataclass(frozen=True)
class PGD(GradientAttack):
    """PGD (Madry et al.): a random start in the whole ball, steps of 2.5 a/T, `restarts`
    random starts; the best iterate by loss is returned."""

    method: str = "pgd"


@dataclass(frozen=True)
class APGD(GradientAttack):
    """APGD (Croce & Hein 2020) on the SR loss: adaptive step size with momentum and
    checkpoints; the best iterate by loss is returned."""

    method: str = "apgd"


@dataclass(frozen=True)
class MIFGSM(GradientAttack):
    """Momentum I-FGSM (Dong et al. 2018), the transfer attack: L1-normalised gradients
    accumulated with decay 1.0; returns X_T."""

    method: str = "mifgsm"


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
    image_ids: Sequence[int] | None = None, member: str | None = None,
    on_pairs: Callable[[int], None] | None = None,
) -> tuple[Tensor, Trace]:
    """The attack object a job's configuration describes (`member` picks one method of the
    'strongest' ensemble; its '@reference' overrides `reference`), run on the same-size images
    x0: every budget, budget-major, delivered as 8-bit images where cfg.quantize."""
    name = member or cfg.method
    if name == "strongest":
        raise ConfigError("the strongest ensemble is measured per image: use run_basic (sreval attack)")
    method = cfg.loop_method(name)
    attack = GradientAttack(model, eps=cfg.alphas, steps=cfg.steps, reference=split_member(name)[1] or reference,
                            quantize=cfg.quantize, quantize_aware=method.quantize_aware, norm=cfg.norm,
                            restarts=method.restarts, seed=cfg.seed, precision=cfg.precision, method=method.name,
                            batch=cfg.batch)
    return attack.run(x0, hr, ids=image_ids, on_pairs=on_pairs)


def shift_attack(model: nn.Module, x0: Tensor, cfg: BasicConfig) -> tuple[Tensor, Trace]:
    """The gradient-free member `shift`: X0 + alpha and X0 - alpha everywhere (for l_2 the
    constant of norm alpha), delivered, whichever moves the SR output further from f(X0);
    budget-major as attack_image. Its trace has no loss curve (there is no loop)."""
    n, k = x0.shape[0], len(cfg.alphas)
    flat = x0.repeat(k, 1, 1, 1)
    eps = per_sample(torch.tensor(cfg.alphas, dtype=x0.dtype).repeat_interleave(n), n * k, flat)
    size = flat[0].numel()
    step = eps if cfg.norm == "linf" else eps / size ** 0.5
    with torch.no_grad():
        ref = model(flat)
        cands = [delivered((flat + sign * step).clamp(0, 1), flat, eps, cfg.norm) if cfg.quantize
                 else (flat + sign * step).clamp(0, 1) for sign in (1.0, -1.0)]
        losses = [mse_to(ref)(model(c)) for c in cands]
    pick = (losses[1] > losses[0]).reshape(-1, 1, 1, 1)
    x = torch.where(pick, cands[1], cands[0])
    best = torch.maximum(losses[0], losses[1])
    return x, Trace(torch.zeros(0, n * k), torch.zeros(n * k, dtype=torch.long), [best], best)


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
    """The basic attack on every image at every budget: one row per (image, budget), with the
    loop's evidence (loss per iteration, gradient health). Under 'strongest' every member
    attacks, and each row keeps the worst case for the model (lowest SR PSNR), which member
    found it (`method`) and what each member reached (`psnr_sr_by_method`)."""
    reference = cfg.reference_for(samples)
    # CPU: one image at a time (batching buys nothing); GPU: same-size images share a batch.
    per_group = 1 if device.type == "cpu" else max(1, (cfg.batch or 64) // len(cfg.alphas))
    rows: dict[int, list[Row]] = {}
    # progress in attack steps of (image, budget) pairs, so a long attack moves the bar (a
    # converged member counts its cap: the bar jumps where a pair converged early)
    total = len(samples) * len(cfg.alphas) * sum(_passes(cfg, m) for m in cfg.members() if m != SHIFT)
    done = [0]

    def on_pairs(k: int) -> None:
        done[0] += k
        if progress:
            progress(min(done[0], total), total)

    if progress:
        progress(0, total)
    for ids in same_size_groups(samples, per_group):
        group = [samples[i] for i in ids]
        x0 = torch.cat([to_tensor(s.lr, device) for s in group])
        hr = torch.cat([to_tensor(s.hr, device) for s in group]) if group[0].hr is not None else None
        by_member: dict[str, tuple[Tensor, list[Row]]] = {}
        for m in cfg.members():
            if _converges(cfg, m):
                before = done[0]
                by_member[m] = converge_member(model, x0, hr, cfg, reference, m, ids, on_pairs)
                on_pairs(len(ids) * len(cfg.alphas) * _passes(cfg, m) - (done[0] - before))  # the rest of its cap
            else:
                xs, tr = shift_attack(model, x0, cfg) if m == SHIFT else attack_image(
                    model, x0, hr, cfg, reference, image_ids=ids, member=m, on_pairs=on_pairs)
                by_member[m] = (xs, tr.rows())
        for j, (i, s) in enumerate(zip(ids, group)):
            per = {m: (xs[j::len(ids)], ev[j::len(ids)]) for m, (xs, ev) in by_member.items()}
            rows[i] = _measure_image(model, s, x0[j:j + 1], per, cfg, scale, saver)
    return [r for i in sorted(rows) for r in rows[i]]


def _convergence(cfg: BasicConfig, members: dict[str, dict[str, Any]]) -> Row:
    """A `strongest` row's convergence: every converging member's, and the whole ensemble's
    cost in forward+backward passes (the members that ran a fixed number of steps included)."""
    fixed = sum(_passes(cfg, m) for m in cfg.members() if m != SHIFT and not _converges(cfg, m))
    worst = [v["gain_last_doubling_db"] for v in members.values() if v["gain_last_doubling_db"] is not None]
    return {"converged": all(v["converged"] for v in members.values()),
            "convergence": {"passes": fixed + sum(v["passes"] for v in members.values()),
                            "gain_last_doubling_db": max(worst) if worst else None,
                            "restart_spread_db": max(v["restart_spread_db"] for v in members.values()),
                            "threshold_db": EFFORTS[cfg.effort].threshold_db, "effort": cfg.effort,
                            "members": members}}


def _converges(cfg: BasicConfig, member: str) -> bool:
    """Members of `strongest` with random starts (pgd, apgd) run to convergence (attacks.strongest)."""
    return cfg.method == "strongest" and split_member(member)[0] in ("pgd", "apgd")


def _passes(cfg: BasicConfig, member: str) -> int:
    """Forward+backward passes of a member per (image, budget): at most, where it converges."""
    return EFFORTS[cfg.effort].passes() if _converges(cfg, member) else cfg.steps * cfg.loop_method(member).restarts


def _measure_image(model: nn.Module, s: Sample, x0: Tensor, per: dict[str, tuple[Tensor, list[Row]]],
                   cfg: BasicConfig, scale: int, saver: ImageSaver) -> list[Row]:
    """The rows of one image: LR/SR PSNR per budget (and against HR where there is one), for
    the member that did the most damage."""
    sr0 = super_resolve(model, x0)
    out = []
    for a, alpha in enumerate(cfg.alphas):
        best: tuple[float, Row, Tensor, Tensor] | None = None
        reached: dict[str, float | None] = {}
        for name, (xs, evidence) in per.items():
            x = xs[a:a + 1]
            sr = super_resolve(model, x)
            m = measure(x0, x, sr0, sr, scale)
            reached[name] = m["psnr_sr"]
            if best is None or m["psnr_sr"] < best[0]:
                best = (m["psnr_sr"], {**m, "method": cfg.member_label(name), **evidence[a]}, x, sr)
        assert best is not None
        _, row, x, sr = best
        row = {"image": s.name, "attack": "basic", "alpha": alpha, **row, **measure_hr(sr, s.hr, scale)}
        if len(per) > 1:
            row["psnr_sr_by_method"] = reached
        members = {cfg.member_label(m): ev[a]["convergence"] for m, (_, ev) in per.items() if "convergence" in ev[a]}
        if members:
            row.update(_convergence(cfg, members))
        out.append(row)
        saver(f"{s.name}_a{alpha * 255:g}", lr=x[0], sr=sr)
    saver(s.name, sr_clean=sr0)
    return out


__all__ = ["GradientAttack", "IFGSM", "PGD", "APGD", "MIFGSM", "attack_image", "run_basic", "shift_attack"]
