"""`--method strongest` run to convergence: the APGD/PGD members of the ensemble, per (image,
budget), with several random starts and an iteration budget that doubles while the result still
moves, and the evidence that it stopped moving.

A fixed budget (50 iterations, one start) left 0.6-3.4 dB of damage unfound on real-weight zoo
models. Here each member runs from `Effort.restarts` seeded random starts with `Effort.first`
iterations, then from the same starts with twice as many, and so on, until a doubling lowers the
best delivered SR PSNR over all runs by no more than `Effort.threshold_db` (converged) or the
next doubling would pass `Effort.cap` (not converged). Each (image, budget) stops as soon as it
has converged, so easy pairs cost little. Decisions use the delivered image's SR PSNR (Y, shaved,
8-bit SR), the number the report quotes, never the optimiser's loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sreval.attacks.common import attack_flat, delivered, in_chunks, per_sample
from sreval.attacks.optim import sample_seeds
from sreval.config import EFFORTS, BasicConfig, Method, split_member
from sreval.evaluation import super_resolve
from sreval.metrics import psnr


def sr_psnr(model: nn.Module, x: Tensor, sr0: Tensor, shave: int) -> Tensor:
    """Per sample, the SR PSNR the report measures (metrics.psnr of the 8-bit SRs, Y, borders
    shaved), as a float64 tensor; inf where the SR did not change."""
    values = psnr(sr0, super_resolve(model, x), y=True, shave=shave)
    return torch.tensor(values if isinstance(values, list) else [values], dtype=torch.float64)


def _gain(before: Tensor, after: Tensor) -> Tensor:
    """How far the SR PSNR fell (dB); 0 where it stayed infinite (nothing changed)."""
    return torch.where(torch.isinf(before) & torch.isinf(after), torch.zeros_like(before), before - after)


def converge_member(
    model: nn.Module, x0: Tensor, hr: Tensor | None, cfg: BasicConfig, reference: str, member: str,
    ids: Sequence[int], on_pairs: Callable[[int], None] | None = None,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """One APGD/PGD member of `strongest` on the same-size images x0 (N), every budget of cfg,
    run to convergence: (the delivered attacked LR, budget-major (A*N); per pair, the evidence
    row: the loss curve of the winning start's best run and the member's `convergence`)."""
    effort = EFFORTS[cfg.effort]
    name, ref = split_member(member)
    method = Method(name, cfg.norm, 1, quantize_aware=cfg.quantize_aware and cfg.quantize)
    n, k = x0.shape[0], len(cfg.alphas)
    flat = x0.repeat(k, 1, 1, 1)
    flat_hr = None if hr is None else hr.repeat(k, 1, 1, 1)
    eps = per_sample(torch.tensor(cfg.alphas, dtype=x0.dtype).repeat_interleave(n), n * k, flat)
    seeds = sample_seeds(cfg.seed, list(ids) * k, eps.flatten().tolist())
    sr0 = super_resolve(model, flat)
    shave = sr0.shape[-1] // flat.shape[-1]
    pairs, starts = n * k, effort.restarts
    best_x = [flat.clone() for _ in range(starts)]
    best_p = [torch.full((pairs,), math.inf, dtype=torch.float64) for _ in range(starts)]
    curves: list[list[list[float]]] = [[[] for _ in range(pairs)] for _ in range(starts)]
    bad = torch.zeros(pairs, dtype=torch.long)
    iterations = torch.zeros(pairs, dtype=torch.long)
    passes = torch.zeros(pairs, dtype=torch.long)
    gain = torch.full((pairs,), math.nan, dtype=torch.float64)
    converged = torch.zeros(pairs, dtype=torch.bool)
    active = torch.arange(pairs)
    for steps in effort.rounds():
        before = torch.stack(best_p).amin(0)[active]
        for r in range(starts):
            rseeds = [seeds[i] if r == 0 else (*seeds[i], r) for i in active.tolist()]
            x, loss, b = _run(model, flat[active], eps[active], None if flat_hr is None else flat_hr[active],
                              steps, ref or reference, rseeds, method, cfg, on_pairs)
            q = delivered(x, flat[active], eps[active], cfg.norm) if cfg.quantize else x
            p = sr_psnr(model, q, sr0[active], shave)
            better = p < best_p[r][active]
            best_p[r][active] = torch.where(better, p, best_p[r][active])
            best_x[r][active] = torch.where(better.reshape(-1, 1, 1, 1), q, best_x[r][active])
            for j, i in enumerate(active.tolist()):
                if better[j]:
                    curves[r][i] = loss[:, j].tolist()
            bad[active] += b
        iterations[active] = steps
        passes[active] += steps * starts
        if steps > effort.first:
            gain[active] = _gain(before, torch.stack(best_p).amin(0)[active])
            converged[active] = gain[active] <= effort.threshold_db
            active = active[~converged[active]]
        if not len(active):
            break
    return _result(best_x, best_p, curves, bad, iterations, passes, gain, converged, starts)


def _run(model: nn.Module, x0: Tensor, eps: Tensor, hr: Tensor | None, steps: int, reference: str,
         seeds: list[tuple[int, ...]], method: Method, cfg: BasicConfig,
         on_pairs: Callable[[int], None] | None) -> tuple[Tensor, Tensor, Tensor]:
    """One run of one start on the active pairs, in memory-sized chunks: (the method's
    iterate, the loss per step (steps+1, B), bad gradient steps (B,))."""
    losses, bads = [], []

    def chunk(sl: slice) -> Tensor:
        size = len(range(*sl.indices(x0.shape[0])))
        tick = None if on_pairs is None else (lambda _done, _total: on_pairs(size))
        x, trace = attack_flat(model, x0[sl], eps[sl], None if hr is None else hr[sl], steps, reference,
                               seeds=seeds[sl], method=method, quantize=cfg.quantize, precision=cfg.precision,
                               on_step=tick)
        losses.append(trace.loss)
        bads.append(trace.bad_grad)
        return x

    x = in_chunks(chunk, x0.shape[0], cfg.batch)
    return x, torch.cat(losses, 1).cpu(), torch.cat(bads).cpu()


def _result(best_x: list[Tensor], best_p: list[Tensor], curves: list[list[list[float]]], bad: Tensor,
            iterations: Tensor, passes: Tensor, gain: Tensor, converged: Tensor,
            starts: int) -> tuple[Tensor, list[dict[str, Any]]]:
    """The best start per pair, and its evidence row (the loss curve of its best run)."""
    psnrs = torch.stack(best_p)  # (starts, pairs)
    win = psnrs.argmin(0)
    xs = torch.stack(best_x)[win, torch.arange(len(win))]
    rows = []
    for i, r in enumerate(win.tolist()):
        finite = [v for v in psnrs[:, i].tolist() if math.isfinite(v)]
        curve = curves[r][i]
        rows.append({
            "loss_curve": curve, "bad_grad_steps": int(bad[i]), "restart_best_loss": [],
            "returned_loss": max(curve) if curve else None,
            "convergence": {
                "converged": bool(converged[i]), "iterations": int(iterations[i]), "restarts": starts,
                "passes": int(passes[i]),
                "gain_last_doubling_db": None if math.isnan(gain[i]) else float(gain[i]),
                "restart_psnr_sr": [None if not math.isfinite(v) else v for v in psnrs[:, i].tolist()],
                "restart_spread_db": max(finite) - min(finite) if len(finite) > 1 else 0.0,
            },
        })
    return xs, rows


__all__ = ["converge_member", "sr_psnr"]
