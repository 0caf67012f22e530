"""Evidence that an attack was strong and converged (Carlini et al. 2019's checklist, adapted
to SR): sanity checks that run with every basic attack, whose results go into report.json
(`evidence`), the CLI (a warning per failed check) and the HTML report.

Checks from what the attack already produced:
- gradient: every step of every (image, budget) had a finite, non-zero input gradient;
- loss_rises: the loss of the returned iterate is above the loss at the start;
- restarts: no restart beat the returned result (best-of-restarts really is the best);
- budget_monotone: per image, SR PSNR does not rise with the budget (0.1 dB slack);
- converged, restarts_agree (`strongest`): every (image, budget) converged, and its random
  starts ended within the threshold of each other (attacks.strongest);
- random_output: whether the model's output is random (then attacked through its expectation).
And short probes on the first image (`probes`, `masking`):
- tiny_budget: at 1/100 of the smallest budget (not rounded to 8 bits, which would erase
  it; at most 10 steps) the SR barely changes: PSNR at least 20 dB above the smallest
  budget's (a locally linear model gives +40 dB);
- more_steps: the largest budget with half the steps is not stronger than with all of
  them (0.25 dB slack): an attack still gaining from more steps has not converged;
- gradient_free, loss_stable, unbounded: the gradient-masking indicators (`masking`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from torch import Tensor

from sreval.attacks.basic import run_basic, shift_attack
from sreval.attacks.common import EOT_SAMPLES, mse_to, objective
from sreval.config import BasicConfig, SHIFT, split_member
from sreval.data import Sample
from sreval.evaluation import measure, super_resolve, to_tensor

MONOTONE_SLACK_DB = 0.1
STEPS_SLACK_DB = 0.25
TINY_FACTOR = 100.0
TINY_MARGIN_DB = 20.0
TINY_STEPS = 10
# loss_stable: steps of budget/1000 move the loss within 2x its first-order prediction (measured: 4-43 %
# on CARN-M and realesr-animevideov3-x4, whose ReLU kinks a step may cross; 10^3-10^4 on a noisy model)
JUMP_SCALE, JUMP_LIMIT = 1000.0, 2.0
UNBOUNDED_STEPS, UNBOUNDED_SLACK_DB = 20, 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _where(items: Sequence[str], limit: int = 4) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _alpha(a: float) -> str:
    return f"{a * 255:g}/255"


def from_rows(rows: Sequence[dict[str, Any]], *, descend: bool = False) -> list[Check]:
    """The checks that need nothing but the attack's own rows (any attack of the shared loop;
    `descend`: the targeted attack, whose loss must fall)."""
    checks = []
    bad = [f"{r['image']} at {_alpha(r['alpha'])} ({r['bad_grad_steps']} steps)" for r in rows
           if r.get("bad_grad_steps")]
    checks.append(Check("gradient", not bad, "finite, non-zero input gradient at every step" if not bad
                        else f"zero or non-finite gradient: {_where(bad)}"))
    def improved(r: dict[str, Any]) -> bool:
        end, start = r["returned_loss"], r["loss_curve"][0]
        return end is not None and (end < start if descend else end > start)

    flat = [f"{r['image']} at {_alpha(r['alpha'])}" for r in rows if r.get("loss_curve") and not improved(r)]
    way = "fell" if descend else "rose"
    checks.append(Check("loss_rises", not flat, f"the loss {way} from the start in every attack" if not flat
                        else f"the loss never {way}: {_where(flat)}"))
    beaten = [f"{r['image']} at {_alpha(r['alpha'])}" for r in rows if len(r.get("restart_best_loss") or []) > 1
              and (min(r["restart_best_loss"]) < r["returned_loss"] * (1 - 1e-6) if descend
                   else max(r["restart_best_loss"]) > r["returned_loss"] * (1 + 1e-6))]
    checks.append(Check("restarts", not beaten, "the returned result is the best over all restarts" if not beaten
                        else f"a restart beat the returned result: {_where(beaten)}"))
    checks += _convergence(rows)
    by_image: dict[str, list[tuple[float, float]]] = {}
    for r in rows:  # per image and attack setting (a defended report has several per image)
        if isinstance(r.get("psnr_sr"), float):
            key = r["image"] if r.get("attack") in (None, "basic") else f"{r['image']} ({r['attack']})"
            by_image.setdefault(key, []).append((r["alpha"], r["psnr_sr"]))
    rising = []
    for image, pts in by_image.items():
        pts.sort()
        for (a0, p0), (a1, p1) in zip(pts, pts[1:]):
            if p1 > p0 + MONOTONE_SLACK_DB:
                rising.append(f"{image}: {p0:.2f} dB at {_alpha(a0)} < {p1:.2f} dB at {_alpha(a1)}")
    checks.append(Check("budget_monotone", not rising, "SR PSNR falls (or stays) as the budget grows"
                        if not rising else f"more budget did less damage: {_where(rising)}"))
    return checks


def _convergence(rows: Sequence[dict[str, Any]]) -> list[Check]:
    """`converged` (rows of the converged `strongest` only): every (image, budget)'s last
    doubling of the iterations lowered the SR PSNR by at most the threshold."""
    conv = [r for r in rows if "converged" in r]
    if not conv:
        return []
    c = conv[0]["convergence"]
    apart = [f"{r['image']} at {_alpha(r['alpha'])} ({r['convergence']['restart_spread_db']:.2f} dB)" for r in conv
             if r["convergence"]["restart_spread_db"] > c["threshold_db"]]
    agree = Check("restarts_agree", not apart, f"the random starts agree within {c['threshold_db']:g} dB" if not apart
                  else f"the random starts end more than {c['threshold_db']:g} dB apart (the best is kept; more starts, "
                  f"--effort thorough, may find more damage): {_where(apart)}")
    stuck = [f"{r['image']} at {_alpha(r['alpha'])} (last doubling {r['convergence']['gain_last_doubling_db']:.2f} dB)"
             for r in conv if not r["converged"]]
    passes = sum(r["convergence"]["passes"] for r in conv) / len(conv)
    if stuck:
        return [Check("converged", False, f"not converged at effort {c['effort']} (the last doubling of the iterations "
                      f"still lowered SR PSNR by more than {c['threshold_db']:g} dB): {_where(stuck)}; try --effort "
                      f"thorough"), agree]
    return [Check("converged", True, f"every image and budget converged at effort {c['effort']}: the last doubling "
                  f"lowered SR PSNR by at most {c['threshold_db']:g} dB ({passes:.0f} passes per image and budget)"),
            agree]


def probes(model: nn.Module, samples: Sequence[Sample], scale: int, cfg: BasicConfig,
           rows: Sequence[dict[str, Any]], device: torch.device) -> tuple[list[Check], dict[str, Any]]:
    """The two probe attacks on the first image: (checks, what they measured)."""
    first = samples[0]
    main = {r["alpha"]: r["psnr_sr"] for r in rows if r["image"] == first.name}
    lo, hi = min(cfg.alphas), max(cfg.alphas)
    # the first loop member of an ensemble: the paper's I-FGSM by default (shift has no steps)
    member = next((m for m in cfg.members() if m != SHIFT), None)
    if member is None:
        return [], {}
    name, ref = split_member(member)
    base = replace(cfg, method=name, reference=ref or cfg.reference, batch=None)
    checks, measured = [], {"image": first.name, "method": member}
    # a budget that small changes little in any number of steps: 10 are enough to show it
    tiny = replace(base, alphas=(lo / TINY_FACTOR,), quantize=False, steps=min(cfg.steps, TINY_STEPS))
    t_row = run_basic(model, [first], scale, tiny, device=device)[0]
    at_lo = main.get(lo)
    # an untouched SR at the smallest budget (infinite PSNR) asks for a near-untouched one here
    need = at_lo + TINY_MARGIN_DB if at_lo is not None and math.isfinite(at_lo) else 60.0
    ok = t_row["psnr_sr"] is not None and t_row["psnr_sr"] >= need
    measured["tiny_budget"] = {"alpha": tiny.alphas[0], "psnr_sr": t_row["psnr_sr"], "needed": need}
    checks.append(Check("tiny_budget", ok, f"budget {_alpha(tiny.alphas[0])}: SR PSNR {_db(t_row['psnr_sr'])} "
                        f"(needs >= {need:.2f}: {TINY_MARGIN_DB:g} dB above {_alpha(lo)})"))
    if cfg.steps >= 2:
        half = replace(base, alphas=(hi,), steps=cfg.steps // 2)
        h_row = run_basic(model, [first], scale, half, device=device)[0]
        full = main.get(hi)
        ok = full is None or h_row["psnr_sr"] is None or full <= h_row["psnr_sr"] + STEPS_SLACK_DB
        measured["more_steps"] = {"alpha": hi, "steps": half.steps, "psnr_sr_half": h_row["psnr_sr"],
                                  "psnr_sr_full": full}
        checks.append(Check("more_steps", ok, f"{_alpha(hi)}: {_db(full)} with {cfg.steps} steps vs "
                            f"{_db(h_row['psnr_sr'])} with {half.steps}"))
    more, found = masking(model, first, scale, cfg, main, device)
    return checks + more, {**measured, **found}


def masking(model: nn.Module, first: Sample, scale: int, cfg: BasicConfig, main: dict[float, float | None],
            device: torch.device) -> tuple[list[Check], dict[str, Any]]:
    """Gradient-masking indicators on the first image (Carlini et al. 2019, sec. 5): the
    gradient-free `shift` must not beat the attack at any budget; the loss must move as its
    gradient predicts under perturbations far below a grey level; an unbounded budget must drive the SR at least as far
    from the clean SR as an unrelated image's SR is (the LR turned upside down)."""
    x0 = to_tensor(first.lr, device)
    checks, measured = [], {}
    shift_x, _ = shift_attack(model, x0, cfg)
    sr0 = super_resolve(model, x0)
    shift = {a: measure(x0, shift_x[i:i + 1], sr0, super_resolve(model, shift_x[i:i + 1]), scale)["psnr_sr"]
             for i, a in enumerate(cfg.alphas)}
    beaten = [f"{_alpha(a)}: shift {_db(shift[a])} < attack {_db(v)}" for a, v in main.items()
              if v is not None and shift[a] is not None and shift[a] < v - MONOTONE_SLACK_DB]
    measured["gradient_free"] = {_alpha(a): v for a, v in shift.items()}
    checks.append(Check("gradient_free", not beaten, "the gradient-free shift (X0 +- alpha) does not beat the attack"
                        if not beaten else f"a gradient-free attack beat the gradient attack (gradient masking, or a "
                        f"model the gradient misleads; --method strongest includes it): {_where(beaten)}"))
    jump = loss_jump(model, x0, max(cfg.alphas), cfg.seed)
    measured["loss_jump"] = jump
    checks.append(Check("loss_stable", jump <= JUMP_LIMIT, f"under steps of 1/{JUMP_SCALE:g} of the budget the loss "
                        f"moves as its gradient predicts (off by {jump:.0%} of the prediction, at most {JUMP_LIMIT:.0%})"
                        if jump <= JUMP_LIMIT else f"under steps of 1/{JUMP_SCALE:g} of the budget the loss moves "
                        f"{jump:.3g} times as far from its gradient's prediction as the prediction itself: random "
                        f"output, shattered or estimated (straight-through) gradients; the attack's steps are "
                        f"unreliable there"))
    whole = 1.0 if cfg.norm == "linf" else float(x0.numel()) ** 0.5  # a budget that reaches every image
    # I-FGSM: from next to X0 (a random start in an unbounded ball is an unrelated image already)
    steps = min(cfg.steps, UNBOUNDED_STEPS)  # no more than the attack itself: a few steps of a large budget go far
    free = replace(cfg, method="ifgsm", reference="psnr-sr", alphas=(whole,), steps=steps, batch=None,
                   restarts=1, ensemble=())
    unbounded = run_basic(model, [first], scale, free, device=device)[0]["psnr_sr"]
    flipped = x0.flip(-1, -2)
    unrelated = measure(x0, flipped, sr0, super_resolve(model, flipped), scale)["psnr_sr"]
    ok = unbounded is not None and unrelated is not None and unbounded <= unrelated + UNBOUNDED_SLACK_DB
    measured["unbounded"] = {"psnr_sr": unbounded, "unrelated_psnr_sr": unrelated}
    checks.append(Check("unbounded", ok, f"an unbounded budget ({steps} I-FGSM steps): SR PSNR "
                        f"{_db(unbounded)}, an unrelated image's {_db(unrelated)}" + ("" if ok else
                        ": the attack cannot move the output even without a budget (gradient masking)")))
    return checks, measured


def loss_jump(model: nn.Module, x0: Tensor, eps: float, seed: int) -> float:
    """How far the change of the attack loss (MSE to the clean SR) under a random step of
    1/JUMP_SCALE of the budget departs from what the gradient predicts, relative to that
    prediction, at a seeded random point of the budget (the largest of three steps): near 0 for
    a smooth model; far above 1 where the loss is random or its gradient shattered."""
    with torch.no_grad():
        ref = model(x0)
    vg, value = objective(model, mse_to(ref))
    g = torch.Generator().manual_seed(seed)
    base = (x0 + eps * (torch.rand(x0.shape, generator=g) * 2 - 1).to(x0)).clamp(0, 1)
    loss, grad = vg(base)
    worst = 0.0
    for _ in range(3):
        step = eps / JUMP_SCALE * (torch.rand(x0.shape, generator=g) * 2 - 1).to(x0)
        predicted = float((grad * step).sum())
        moved = float(value(base + step).sum() - loss.sum())
        if predicted or moved:
            worst = max(worst, abs(moved - predicted) / max(abs(predicted), 1e-30))
    return worst


def _db(v: float | None) -> str:
    return "inf dB" if v is None or not math.isfinite(v) else f"{v:.2f} dB"


def evidence(model: nn.Module | None, samples: Sequence[Sample], scale: int, cfg: BasicConfig | None,
             rows: Sequence[dict[str, Any]], device: torch.device | None, *, run_probes: bool = True,
             descend: bool = False, straight_through: Sequence[str] = (), random_output: float | None = None,
             ) -> dict[str, Any]:
    """The report's `evidence` section: every check with its verdict and detail, `ok` when all
    passed, and what the probes measured (the basic attack's; the other attacks give their
    rows only: `evidence(None, [], 0, None, rows, None, run_probes=False)`). `straight_through`:
    the model's operators whose gradient is a straight-through estimate (a note says so);
    `random_output`: how far two runs of the model differed (attacks.common.randomness), where
    that was measured."""
    checks = from_rows(rows, descend=descend)
    if random_output is not None:
        checks.append(Check("random_output", True, "the output is the same on every run" if not random_output else
                            f"the output is random (two runs differ by up to {random_output:.3g}): attacked and "
                            f"measured as the mean of {EOT_SAMPLES} runs (expectation over its randomness)"))
    measured: dict[str, Any] = {}
    if run_probes and samples and model is not None and cfg is not None and device is not None:
        more, measured = probes(model, samples, scale, cfg, rows, device)
        checks += more
    fell = [f"{r['image']} at {_alpha(r['alpha'])}" for r in rows if r.get("start")]
    notes = [f"zero gradient at X0 for {_where(fell)}: attacked from a small random start instead"] if fell else []
    if straight_through:
        notes.append(f"the gradient is a straight-through estimate through {', '.join(straight_through)} (the model "
                     f"rounds or quantises): the attack optimises the deployed numbers with the rounding's gradient "
                     f"taken as the identity")
    return {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks], "probes": measured,
            "failed": [c.name for c in checks if not c.ok], "notes": notes}


__all__ = ["Check", "from_rows", "probes", "evidence"]
