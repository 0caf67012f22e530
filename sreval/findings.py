"""The paper's qualitative claims, tested on the models and data of one run.

Each `Finding` states a claim of Choi et al. (ICCV 2019), what in the run bears on it, and a
verdict: "holds", "partly", "does not hold", or "not tested" (the run lacks what the claim
needs: an attack, a GAN-trained model, bicubic, ...). Verdicts are computed from the numbers
in the run at the budget closest to 8/255 (the paper's showcase), one dataset at a time, among
models of one scale (the one most of the run's models have): x2 and x4 numbers do not compare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sreval.analysis import spearman
from sreval.figures import budget_label
from sreval.runview import CellView, RunView, mean, nearest

SHOWCASE = 8 / 255
HOLDS, PARTLY, FAILS, UNTESTED = "holds", "partly", "does not hold", "not tested"
# "far larger": the SR output loses at least this many dB more than the LR input
FAR_LARGER_DB = 3.0
WEAK_RHO = 0.3  # a rank correlation closer to 0 than this is weak evidence
DETAILED = 4  # up to this many models x datasets, the evidence lists each; beyond, it sums them up


@dataclass(frozen=True)
class Finding:
    claim: str
    source: str  # where the paper makes it
    verdict: str
    evidence: str


def _near(alphas: Sequence[float]) -> float | None:
    return nearest(alphas, SHOWCASE)


class _Facts:
    """The run's basic-attack means, per dataset and model, at the showcase budget."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.models = {m["name"]: m for m in run.models}
        scales = Counter(m.get("scale") for m in run.models)
        self.scale = max(scales, key=lambda s: (scales[s], s == 4)) if scales else None
        basic = [c for c in run.of("basic") if self._same_scale(c.model)]
        self.alpha = _near(sorted({a for c in basic for a in c.alphas}))
        self.basic = basic

    def _same_scale(self, name: str) -> bool:
        return self.models.get(name, {}).get("scale") == self.scale

    def mean(self, cell: CellView, metric: str, alpha: float | None = None) -> float | None:
        at = self.alpha if alpha is None else alpha
        return mean([r.get(metric) for r in cell.rows if r.get("alpha") == at and r.get("attack") == cell.attack])

    def sr(self) -> dict[str, dict[str, float]]:
        """dataset -> model -> mean SR PSNR of the basic attack at the showcase budget."""
        out: dict[str, dict[str, float]] = {}
        for c in self.basic:
            v = self.mean(c, "psnr_sr")
            if v is not None:
                out.setdefault(c.dataset, {})[c.model] = v
        return out

    def gan(self, name: str) -> bool | None:
        g = self.models.get(name, {}).get("gan_trained")
        return None if g is None else bool(g)

    @property
    def where(self) -> str:
        return f"basic attack, alpha = {budget_label(self.alpha)}, x{self.scale} models" if self.alpha else ""


def _span(values: Sequence[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f} to {max(values):.{digits}f}"


def _join(parts: Sequence[str]) -> str:
    return "; ".join(parts)


def _verdict(passed: Sequence[float]) -> str:
    """From one score per test: 1 (holds), 0 (does not), in between (partly)."""
    if not passed:
        return UNTESTED
    return HOLDS if all(p == 1 for p in passed) else FAILS if not any(passed) else PARTLY


def _result(claim: str, source: str, passed: Sequence[float], parts: Sequence[str], needs: str,
            where: str = "") -> Finding:
    """The finding from its tests (`passed`) and what they saw (`parts`); `needs` says what
    a run must hold to test the claim at all."""
    evidence = _join(parts) or needs
    if parts and where:
        evidence = f"{where}: {evidence}"
    return Finding(claim, source, _verdict(passed), evidence)


def _gan_most_vulnerable(f: _Facts) -> Finding:
    claim = "GAN-trained models are the most vulnerable"
    passed, parts = [], []
    for d, sr in f.sr().items():
        gan = {m: v for m, v in sr.items() if f.gan(m) and m != "bicubic"}
        other = {m: v for m, v in sr.items() if f.gan(m) is False and m != "bicubic"}
        if not gan or not other:
            continue
        worst = min(sr, key=lambda m: sr[m])
        gan_mean, other_mean = mean(list(gan.values())), mean(list(other.values()))
        # both: the least robust model is GAN-trained, and GAN-trained ones are worse on average
        passed.append(((f.gan(worst) is True) + (gan_mean < other_mean)) / 2)  # type: ignore[operator]
        parts.append(f"{d}: least robust {worst} ({sr[worst]:.2f} dB); "
                     f"GAN-trained mean {gan_mean:.2f} vs PSNR-oriented {other_mean:.2f} dB")
    return _result(claim, "sec. 4.1, Fig. 1", passed, parts,
                   "needs the basic attack on at least one GAN-trained and one PSNR-oriented model", f.where)


def _bicubic_most_robust(f: _Facts) -> Finding:
    claim = "Bicubic interpolation is the most robust"
    passed, parts = [], []
    for d, sr in f.sr().items():
        if "bicubic" not in sr or len(sr) < 2:
            continue
        best = max(sr, key=lambda m: sr[m])
        runner_up = max((v for m, v in sr.items() if m != "bicubic"), default=None)
        passed.append(best == "bicubic")
        parts.append(f"{d}: bicubic {sr['bicubic']:.2f} dB, best learned model {runner_up:.2f} dB")
    return _result(claim, "sec. 4.1, Fig. 1", passed, parts,
                   "needs the basic attack on bicubic and at least one learned model", f.where)


def _sr_damage_larger(f: _Facts) -> Finding:
    claim = f"The SR output is damaged far more than the LR input (by over {FAR_LARGER_DB:g} dB)"
    passed, seen = [], []
    for c in f.basic:
        lr, sr = f.mean(c, "psnr_lr"), f.mean(c, "psnr_sr")
        if c.model == "bicubic" or lr is None or sr is None:
            continue
        passed.append(lr - sr > FAR_LARGER_DB)
        seen.append((f"{c.model}/{c.dataset}", lr, sr))
    if len(seen) <= DETAILED:
        parts = [f"{k}: LR {lr:.1f} dB, SR {sr:.1f} dB" for k, lr, sr in seen]
    else:
        gaps = [lr - sr for _, lr, sr in seen]
        parts = [f"{sum(passed)} of {len(seen)} model/dataset pairs: LR PSNR {_span([x[1] for x in seen])} dB, "
                 f"SR PSNR {_span([x[2] for x in seen])} dB, SR lower by {_span(gaps)} dB (mean {np.mean(gaps):.1f})"]
        parts += [f"not {k} (LR {lr:.1f}, SR {sr:.1f} dB)" for (k, lr, sr), ok in zip(seen, passed) if not ok]
    return _result(claim, "sec. 4.1, Fig. 1-2", passed, parts,
                   "needs the basic attack on a learned model", f.where)


def _size(f: _Facts) -> Finding:
    claim = "Vulnerability grows with model size and depth"
    passed, parts = [], []
    for d, sr in f.sr().items():
        learned = [m for m in sr if m != "bicubic" and f.models.get(m, {}).get("params")]
        if len(learned) < 3:
            continue
        psnr = [sr[m] for m in learned]
        rho_p = spearman([float(f.models[m]["params"]) for m in learned], psnr)
        rho_c = spearman([float(f.models[m].get("conv_layers") or 0) for m in learned], psnr)
        if rho_p is None or rho_c is None:
            continue
        # each correlation: 1 if clearly negative, 1/2 if weakly, 0 if not
        passed.append(sum(1.0 if r <= -WEAK_RHO else 0.5 if r < 0 else 0.0 for r in (rho_p, rho_c)) / 2)
        parts.append(f"{d} ({len(learned)} models): Spearman of SR PSNR with parameters {rho_p:+.2f}, "
                     f"with conv layers {rho_c:+.2f} (negative = bigger is more vulnerable)")
    return _result(claim, "sec. 4.1, Fig. 3", passed, parts,
                   "needs the basic attack on at least three learned models", f.where)


def _partial(f: _Facts) -> Finding:
    claim = "A partial attack's damage permeates outside the attacked region and decays with distance"
    passed, parts, seen = [], [], []
    for c in f.run.of("partial"):
        profiles = {p["alpha"]: p for p in c.sections.get("permeation") or []}
        alpha = _near(sorted(profiles))
        if alpha is None or c.model == "bicubic":
            continue
        dist, mse = profiles[alpha]["distance_lr"], profiles[alpha]["mse_y"]
        outside = f.mean(c, "psnr_sr", alpha)
        rho = spearman([float(d) for d in dist], [float(m) for m in mse]) if len(mse) > 1 else None
        if rho is None or outside is None:
            parts.append(f"{c.model}/{c.dataset}: fewer than two rings outside the attacked region (crop too small)")
            continue
        permeates = mse[0] > 0 and np.isfinite(outside)
        passed.append(permeates and rho < 0 and mse[-1] < mse[0])
        seen.append((f"{c.model}/{c.dataset}", alpha, outside, mse[0], mse[-1], dist[-1], rho))
    if len(seen) <= DETAILED:
        parts += [f"{k} ({budget_label(a)}): SR PSNR outside {o:.1f} dB, MSE {m1:.2f} at ring 1 -> {mn:.3f} at ring {d} "
                  f"(Spearman with distance {r:+.2f})" for k, a, o, m1, mn, d, r in seen]
    else:
        parts.append(f"{sum(passed)} of {len(seen)} model/dataset pairs at {budget_label(seen[0][1])}: SR PSNR outside the "
                     f"region {_span([x[2] for x in seen])} dB; MSE of Y {_span([x[3] for x in seen])} at ring 1, "
                     f"{_span([x[4] for x in seen], 3)} at the last ring; Spearman with distance "
                     f"{_span([x[6] for x in seen])}")
        parts += [f"not {x[0]}" for x, ok in zip(seen, passed) if not ok]
    return _result(claim, "sec. 4.3, Fig. 7", passed, parts, "needs the partial attack on a learned model")


def _transfer(f: _Facts) -> Finding:
    claim = "Adversarial examples transfer between models"
    passed, parts = [], []
    lr_psnr = {(c.model, c.dataset): f.mean(c, "psnr_lr") for c in f.basic}
    for c in f.run.cells:
        sec = c.sections.get("transfer")
        if not sec:
            continue
        blocks = {b["alpha"]: b["psnr_sr"] for b in sec.get("matrix", [])}
        alpha = _near(sorted(blocks))
        if alpha is None:
            continue
        names, matrix = sec["models"], blocks[alpha]
        off = [matrix[i][j] for i in range(len(names)) for j in range(len(names))
               if i != j and names[j] != "bicubic" and names[i] != "bicubic"]
        diag = [matrix[i][i] for i in range(len(names)) if names[i] != "bicubic"]
        inputs = [lr_psnr.get((names[i], c.dataset)) for i in range(len(names)) if names[i] != "bicubic"]
        lr = mean([v for v in inputs if v is not None])
        if not off:
            continue
        # transferred perturbations hurt the target's SR output more than they change its input
        ok = lr is not None and mean(off) < lr  # type: ignore[operator]
        passed.append(ok)
        parts.append(f"{c.dataset} ({budget_label(alpha)}): SR PSNR white-box {mean(diag):.1f} dB, transferred "
                     f"{mean(off):.1f} dB" + (f", LR PSNR of the perturbations {lr:.1f} dB" if lr is not None else
                                             " (no basic-attack LR PSNR in this run to compare with)"))
    return _result(claim, "sec. 4.4, Fig. 4", passed, parts,
                   "needs the transfer attack on at least two learned models")


def _index(f: _Facts) -> Finding:
    claim = "The robustness index correlates with the attacked SR PSNR (higher index, lower PSNR)"
    passed, seen = [], []
    for c in f.run.of("index"):
        ri = c.sections.get("robustness_index") or {}
        r = ri.get("pearson")
        if r is None or c.model == "bicubic":
            continue
        passed.append(r < 0)
        seen.append((f"{c.model}/{c.dataset}", r, ri.get("spearman"), ri.get("n", "?")))
    if len(seen) <= DETAILED:
        parts = [f"{k}: Pearson {r:+.2f}, Spearman {rho or 0:+.2f} over {n} images" for k, r, rho, n in seen]
    else:
        rs = [x[1] for x in seen]
        parts = [f"Pearson's r negative for {sum(passed)} of {len(seen)} model/dataset pairs "
                 f"({_span(rs, 2)}, median {np.median(rs):+.2f})"]
        parts += [f"not {k} ({r:+.2f} over {n} images)" for (k, r, _, n), ok in zip(seen, passed) if not ok]
    return _result(claim, "sec. 5.2, Fig. 10", passed, parts, "needs the index attack on a learned model")


def _defense(f: _Facts) -> Finding:
    claim = "The defenses raise the SR PSNR under attack"
    gains: dict[str, list[tuple[str, float]]] = {}  # defense -> (model/dataset, dB gained)
    alpha = None
    for c in f.run.of("defense"):
        if c.model == "bicubic":
            continue
        alpha = _near(c.alphas)
        rows = [r for r in c.rows if r.get("alpha") == alpha]
        bare = mean([r.get("psnr_sr") for r in rows if r.get("attack") == "basic"])
        for name in dict.fromkeys(str(r.get("attack")) for r in rows):
            defended = mean([r.get("psnr_sr") for r in rows if r.get("attack") == name])
            if name.startswith("basic+") and not name.endswith("-adaptive") and None not in (bare, defended):
                gain = defended - bare  # type: ignore[operator]
                gains.setdefault(name, []).append((f"{c.model}/{c.dataset}", gain))
    passed, parts = [], []
    for name, items in gains.items():
        up = [g for _, g in items]
        passed.append(sum(g > 0 for g in up) / len(up))
        parts.append(f"{name} raises it for {sum(g > 0 for g in up)} of {len(up)} model/dataset pairs "
                     f"(by {_span(up)} dB, mean {np.mean(up):+.1f}) at {budget_label(alpha)}")  # type: ignore[arg-type]
    return _result(claim, "sec. 5.3", passed, parts, "needs the defense attack on a learned model")


CHECKS = (_gan_most_vulnerable, _bicubic_most_robust, _sr_damage_larger, _size, _partial, _transfer, _index,
          _defense)


def findings(run: RunView) -> list[Finding]:
    """Every claim, with its verdict on this run."""
    facts = _Facts(run)
    return [check(facts) for check in CHECKS]


def as_dicts(items: Sequence[Finding]) -> list[dict[str, Any]]:
    return [{"claim": i.claim, "source": i.source, "verdict": i.verdict, "evidence": i.evidence} for i in items]


__all__ = ["Finding", "findings", "as_dicts", "HOLDS", "PARTLY", "FAILS", "UNTESTED"]
