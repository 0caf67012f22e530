"""The one optimisation loop every gradient attack runs (basic, partial, targeted, universal).

A `Method` says how the loop steps: the paper's I-FGSM (eq. 2-3), PGD with a random start and
restarts (Madry et al. 2018), APGD (Croce & Hein 2020: adaptive step size, momentum,
checkpoints) adapted to the SR loss, and momentum I-FGSM (Dong et al. 2018, for transfer),
each under an l_inf or an l_2 budget. The loop maximises a per-sample objective given as a
`value_and_grad` closure, so the attacks differ only in their objective and constraint set,
and returns a `Trace`: the loss at every iterate, the steps whose gradient was zero or not
finite, and each restart's best loss, which the report turns into evidence.

Every random start is drawn from one generator per sample (seed, sample id, budget, restart),
so the numbers never depend on how samples are batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sreval.config import Method
from sreval.errors import ConfigError

# How far each method's iterate is allowed to be from the last one it returns.
RETURNS = {"ifgsm": "last", "mifgsm": "last", "pgd": "best", "apgd": "best"}

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]  # x -> (objective (B,), d objective / dx)


@dataclass
class Trace:
    """What the loop saw, per sample: `loss` (restart-best run, steps+1 values: the start and
    every iterate), `bad_grad` (steps whose gradient was all zero or not finite, all restarts),
    `restart_best` (each restart's best loss), `returned_loss` (loss of the returned iterate)."""

    loss: Tensor  # (steps + 1, B)
    bad_grad: Tensor  # (B,) int
    restart_best: list[Tensor] = field(default_factory=list)  # R x (B,)
    returned_loss: Tensor | None = None  # (B,)
    fallback: Tensor | None = None  # (B,) bool: restarted from a random point (zero gradient at X0)

    def rows(self, sign: float = 1.0) -> list[dict[str, object]]:
        """Per sample: the loss curve and health, plain floats for the report. `sign` -1
        turns a descended objective back into its loss."""
        curves = (self.loss.detach().double().cpu().T * sign).tolist()
        bad = self.bad_grad.cpu().tolist()
        restarts = ((torch.stack(self.restart_best).double().cpu().T * sign).tolist() if self.restart_best
                    else [[]] * len(bad))
        returned = ((self.returned_loss.double().cpu() * sign).tolist() if self.returned_loss is not None
                    else [None] * len(bad))
        fell = self.fallback.cpu().tolist() if self.fallback is not None else [False] * len(bad)
        return [{"loss_curve": c, "bad_grad_steps": b, "restart_best_loss": r, "returned_loss": v,
                 **({"start": "random: the gradient at X0 was zero"} if f else {})}
                for c, b, r, v, f in zip(curves, bad, restarts, returned, fell)]

    def replace_samples(self, idx: Tensor, other: Trace) -> Trace:
        """This trace with samples `idx` taken from `other` (a re-run of just those)."""
        loss, bad = self.loss.clone(), self.bad_grad.clone()
        loss[:, idx], bad[idx] = other.loss, other.bad_grad
        rb = [a.clone().index_copy_(0, idx, b) for a, b in zip(self.restart_best, other.restart_best)]
        ret = None
        if self.returned_loss is not None and other.returned_loss is not None:
            ret = self.returned_loss.clone().index_copy_(0, idx, other.returned_loss)
        fell = torch.zeros_like(bad, dtype=torch.bool) if self.fallback is None else self.fallback.clone()
        fell[idx] = True
        return Trace(loss, bad, rb, ret, fell)

    @staticmethod
    def cat(traces: Sequence[Trace]) -> Trace:
        """Traces of consecutive chunks of one flat batch, as one."""
        rb = [torch.cat(parts) for parts in zip(*(t.restart_best for t in traces))]
        ret = [t.returned_loss for t in traces]
        fell = [t.fallback if t.fallback is not None else torch.zeros_like(t.bad_grad, dtype=torch.bool)
                for t in traces]
        return Trace(torch.cat([t.loss for t in traces], 1), torch.cat([t.bad_grad for t in traces]),
                     rb, torch.cat(ret) if all(r is not None for r in ret) else None,  # type: ignore[arg-type]
                     torch.cat(fell))


# ----------------------------------------------------------------------------- geometry


def _bshape(t: Tensor) -> tuple[int, ...]:
    return (t.shape[0],) + (1,) * (t.dim() - 1)


def l2_norm(t: Tensor) -> Tensor:
    """Per-sample l_2 norm, shaped to broadcast over the sample."""
    return t.flatten(1).norm(dim=1).reshape(_bshape(t))


def project(x: Tensor, x0: Tensor, eps: Tensor, norm: str = "linf", box: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """Onto the budget ball around x0 (eq. 3 for l_inf), intersected with the image box (eq. 2).
    For l_2 the ball projection comes first: clipping to the box afterwards only shrinks each
    component of x - x0 (x0 lies in the box), so the result stays in the ball."""
    if norm == "linf":
        x = torch.minimum(torch.maximum(x, x0 - eps), x0 + eps)
    else:
        d = x - x0
        d = d * torch.clamp(eps / l2_norm(d).clamp_min(1e-12), max=1.0)
        x = x0 + d
    return x if box is None else x.clamp(*box)


def direction(grad: Tensor, norm: str) -> Tensor:
    """The steepest ascent step of unit size for the norm: sign (l_inf) or g / ||g||_2."""
    if norm == "linf":
        return grad.sign()
    return grad / l2_norm(grad).clamp_min(1e-20)


def seeded_noise(like: Tensor, seeds: Sequence[tuple[int, ...]]) -> Tensor:
    """Uniform noise in [-1, 1], one generator per sample: sample i's noise depends on
    seeds[i] alone, never on what else is in the batch."""
    if len(seeds) != like.shape[0]:
        raise ConfigError(f"{len(seeds)} seeds for a batch of {like.shape[0]}")
    noise = []
    for s in seeds:
        # hash() of a tuple of ints is the same in every process (only str/bytes are salted)
        g = torch.Generator().manual_seed(hash(tuple(int(p) for p in s)) & 0x7FFF_FFFF_FFFF)
        noise.append(torch.rand(tuple(like.shape[1:]), generator=g, dtype=torch.float32) * 2 - 1)
    return torch.stack(noise).to(device=like.device, dtype=like.dtype)


def sample_seeds(seed: int, ids: Sequence[int], eps: Sequence[float]) -> list[tuple[int, ...]]:
    """The seed tuple of each (sample id, budget): the budget enters in 1/255000 units."""
    return [(int(seed), int(i), round(float(e) * 255 * 1000)) for i, e in zip(ids, eps)]


def random_point(x0: Tensor, eps: Tensor, seeds: Sequence[tuple[int, ...]], norm: str, radius: float | Tensor,
                 mask: Tensor | None = None, box: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """A seeded random point at `radius` (fraction of the budget) around x0: uniform in the
    l_inf cube, or on the l_2 sphere in a uniformly random direction (masked where given)."""
    noise = seeded_noise(x0, seeds)
    if mask is not None:
        noise = noise * mask
    if norm == "l2":
        noise = noise / l2_norm(noise).clamp_min(1e-12)
    return project(x0 + noise * eps * radius, x0, eps, norm, box)


# ----------------------------------------------------------------------------- the loop


def apgd_checkpoints(steps: int) -> list[int]:
    """Croce & Hein's checkpoints w_j = ceil(p_j T): p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps - 1e-9) for q in p if 0 < q < 1} - {0, steps})  # 0.57 * 100 is 57.000...01


def optimize(
    value_and_grad: ValueAndGrad,
    x0: Tensor,
    eps: Tensor,
    steps: int,
    method: Method,
    *,
    seeds: Sequence[tuple[int, ...]],
    start_radius: float | Tensor | None = None,
    mask: Tensor | None = None,
    box: tuple[float, float] | None = (0.0, 1.0),
    final_value: Callable[[Tensor], Tensor] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Trace]:
    """Maximise the per-sample objective around x0 within budgets eps (B,1,...) and return
    (the iterate the method returns, its Trace).

    `start_radius`: ifgsm/mifgsm start at x0, or at a seeded random point of that radius (a
    fraction of the budget: the clean-sr reference needs one, its gradient at x0 is zero);
    pgd and apgd always start at a random point of the whole budget. `mask` zeroes the
    direction (and the start) outside it (the partial attack). `final_value(x)` gives the
    objective of the last iterate without a gradient (default: value_and_grad); `on_step(done,
    total)` hears of every gradient step over all restarts."""
    if eps.dim() != x0.dim():
        raise ConfigError("eps must be shaped (B, 1, ...) like x0")
    best_x, best_v, curves, restart_best = x0.detach().clone(), None, None, []
    bad = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    for r in range(method.restarts):
        radius = 1.0 if method.name in ("pgd", "apgd") else start_radius
        rseeds = list(seeds) if r == 0 else [(*s, r) for s in seeds]
        x = x0.detach().clone() if radius is None else random_point(x0, eps, rseeds, method.norm, radius, mask, box)
        run = (_APGD if method.name == "apgd" else _Steps)(value_and_grad, x0, eps, steps, method, mask, box)
        if on_step is not None:
            run.on_step = lambda n, _r=r: on_step(_r * steps + n, method.restarts * steps)
        last, last_v, run_best_x, run_best_v, curve, run_bad = run.go(x)
        end_v = last_v if last_v is not None else (final_value or (lambda t: value_and_grad(t)[0]))(last).detach()
        curve = torch.cat([curve, end_v[None]])
        better = end_v > run_best_v
        run_best_v = torch.where(better, end_v, run_best_v)
        run_best_x = torch.where(better.reshape(_bshape(x0)), last, run_best_x)
        pick_x = last if RETURNS[method.name] == "last" else run_best_x
        pick_v = end_v if RETURNS[method.name] == "last" else run_best_v
        restart_best.append(run_best_v)
        bad += run_bad
        if best_v is None:
            best_x, best_v, curves = pick_x, pick_v, curve
        else:
            better = pick_v > best_v
            best_x = torch.where(better.reshape(_bshape(x0)), pick_x, best_x)
            best_v = torch.where(better, pick_v, best_v)
            curves = torch.where(better[None], curve, curves)
    assert curves is not None and best_v is not None
    return best_x.detach(), Trace(curves, bad, restart_best, best_v)


class _Steps:
    """I-FGSM, momentum I-FGSM and PGD: fixed steps along the norm's ascent direction."""

    def __init__(self, vg: ValueAndGrad, x0: Tensor, eps: Tensor, steps: int, method: Method,
                 mask: Tensor | None, box: tuple[float, float] | None) -> None:
        self.vg, self.x0, self.eps, self.steps, self.m, self.mask, self.box = vg, x0, eps, steps, method, mask, box
        self.on_step: Callable[[int], None] | None = None
        self.done = 0

    def grad_at(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(objective, gradient with non-finite entries zeroed and the mask applied, bad flag)."""
        v, g = self.vg(x)
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done)
        finite = torch.isfinite(g).flatten(1).all(1)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if self.mask is not None:
            g = g * self.mask
        bad = ~finite | (g.flatten(1).abs().amax(1) == 0)
        return v.detach(), g, bad.long()

    def step_size(self) -> Tensor:
        # I-FGSM and MI-FGSM: a/T (eq. 2), reaching the budget's edge in T steps at most;
        # PGD: 2.5 a/T, Madry et al.'s choice, so a random start can still cross the ball.
        return self.eps * ((2.5 if self.m.name == "pgd" else 1.0) / self.steps)

    def go(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """(last iterate, its objective if known, best iterate, best objective, objective per
        step (T, B), bad steps)."""
        curve, bad = [], torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        best_x, best_v = x, None
        acc = torch.zeros_like(x)
        alpha = self.step_size()
        for _ in range(self.steps):
            v, g, b = self.grad_at(x)
            curve.append(v)
            bad += b
            if best_v is None:
                best_v = v
            else:
                better = v > best_v
                best_x = torch.where(better.reshape(_bshape(x)), x, best_x)
                best_v = torch.where(better, v, best_v)
            if self.m.name == "mifgsm":
                acc = self.m.momentum * acc + g / g.flatten(1).abs().mean(1).clamp_min(1e-20).reshape(_bshape(g))
                g = acc
            d = direction(g, self.m.norm)
            if self.mask is not None:
                d = d * self.mask
            x = project(x.detach() + alpha * d, self.x0, self.eps, self.m.norm, self.box)
        assert best_v is not None
        return x, None, best_x, best_v, torch.stack(curve), bad


class _APGD(_Steps):
    """APGD (Croce & Hein 2020, Alg. 1) per sample: step size eta_0 = 2 eps, momentum 0.75,
    at each checkpoint the step is halved (and the iterate reset to the best one) when fewer
    than rho = 75 % of the steps since the last checkpoint raised the objective, or when
    neither the step size nor the best objective changed since the last checkpoint."""

    RHO, MOMENTUM = 0.75, 0.75

    def go(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        # T gradient evaluations in all (x_0 .. x_{T-1}), as the other methods; a reset to the
        # best point reuses the gradient stored with it.
        b = _bshape(x)
        checkpoints = set(apgd_checkpoints(self.steps))
        eta = 2.0 * self.eps.expand(b).clone()
        v, g, bad = self.grad_at(x)
        curve = [v]
        best_x, best_v, best_g = x, v, g
        x_prev = x
        increases = torch.zeros_like(v)
        last_cp, eta_cp, best_cp = 0, eta.clone(), best_v.clone()
        for k in range(self.steps - 1):
            z = project(x + eta * self._dir(g), self.x0, self.eps, self.m.norm, self.box)
            a = 1.0 if k == 0 else self.MOMENTUM
            x_new = project(x + a * (z - x) + (1 - a) * (x - x_prev), self.x0, self.eps, self.m.norm, self.box)
            x_prev, x = x, x_new
            v_new, g, bb = self.grad_at(x)
            bad += bb
            increases += (v_new > v).to(v.dtype)
            v = v_new
            curve.append(v)
            better = (v > best_v).reshape(b)
            best_x, best_g = torch.where(better, x, best_x), torch.where(better, g, best_g)
            best_v = torch.maximum(v, best_v)
            if k + 1 in checkpoints:
                span = k + 1 - last_cp
                halve = (increases < self.RHO * span) | ((eta_cp == eta).reshape(-1) & (best_cp == best_v))
                hb = halve.reshape(b)
                eta = torch.where(hb, eta / 2, eta)
                x, x_prev = torch.where(hb, best_x, x), torch.where(hb, best_x, x_prev)
                g, v = torch.where(hb, best_g, g), torch.where(halve, best_v, v)
                last_cp, eta_cp, best_cp = k + 1, eta.clone(), best_v.clone()
                increases = torch.zeros_like(v)
        return x, v, best_x, best_v, torch.stack(curve), bad

    def _dir(self, g: Tensor) -> Tensor:
        d = direction(g, self.m.norm)
        return d if self.mask is None else d * self.mask


__all__ = ["Trace", "optimize", "project", "direction", "l2_norm",
           "seeded_noise", "sample_seeds", "random_point", "apgd_checkpoints"]
