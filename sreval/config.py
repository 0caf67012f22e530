"""What the jobs take: budgets, methods, references and the attack configurations, validated
once, with the job's own defaults.

Pure Python (no torch, no onnxruntime): the CLI builds its options and its `--help` from
these values without importing the heavy layers, and the attacks validate with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from sreval.errors import ConfigError, DataError
from sreval.registry import ATTACKS

if TYPE_CHECKING:  # only described here
    from sreval.data import Sample

PAPER_ALPHAS = "1/255,2/255,4/255,8/255,16/255,32/255"  # the paper's budgets (Fig. 1, 3, 5, 7)
METHODS = ("ifgsm", "pgd", "apgd", "mifgsm")  # the shared loop's methods (sreval.attacks.optim)
NORMS = ("linf", "l2")
REFERENCES = ("hr", "clean-sr")
PRECISIONS = ("fp32", "bf16", "fp16")
# The default members of the `strongest` ensemble: the paper's I-FGSM with the run's reference,
# and PGD / APGD on eq. 1 itself (distance to the clean SR), the quantity the headline SR PSNR
# measures. Measured on bicubic (Set5, 8/255): PGD and APGD that maximise the distance to HR
# (the official code's loss) reach 0.8-1.4 dB LESS SR damage than I-FGSM; stronger optimisers
# of a proxy are not stronger attacks on the metric.
# `shift` is the gradient-free candidate X0 +- alpha everywhere (two forward passes): the worst
# case of a linear model such as bicubic, which no gradient method here finds (measured on
# Set5, 8/255: bicubic 31.42 dB under the shift, 34.38 dB under the best gradient attack).
# Since protocol 2 the APGD members run to convergence (EFFORTS) on eq. 1 and on `psnr-sr`, the
# measured quantity itself; PGD left the default: APGD beat it at the same cost on every zoo model.
STRONGEST = ("ifgsm", "apgd@clean-sr", "apgd@psnr-sr", "shift")
SHIFT = "shift"
# An ensemble member's loss that is exactly the headline metric's error: MSE on the Y channel of
# the clipped, 8-bit rounded (straight-through) SR against the clean SR, borders shaved by the scale.
MEASURED = "psnr-sr"
ATTACK_METHODS = METHODS + ("strongest",)


@dataclass(frozen=True)
class Effort:
    """How hard `strongest` works per (image, budget): each APGD/PGD member runs from
    `restarts` seeded random starts with `first` iterations, then again from the same starts
    with twice as many, while the best delivered SR PSNR still falls by more than
    `threshold_db` per doubling, up to `cap` iterations. A row whose last doubling still gained
    more is not converged. (Continuing each start from its best point instead was measured
    weaker: realesr-animevideov3-x4, Set5 bird crop, 8/255, 400 iterations: 23.25 dB against
    21.98 dB from a fresh start, since APGD's step size schedule stretches with the run.)"""

    restarts: int
    first: int
    cap: int
    threshold_db: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.restarts, int) and isinstance(self.first, int) and self.restarts >= 1
                and 2 <= self.first <= self.cap):
            raise ConfigError(f"an effort needs restarts >= 1 and 2 <= first <= cap, got {self}")

    def rounds(self) -> list[int]:
        """The iterations of each run: first, doubled while within the cap."""
        out = [self.first]
        while out[-1] * 2 <= self.cap:
            out.append(out[-1] * 2)
        return out

    def passes(self) -> int:
        """Forward+backward passes of one member when it never converges, all restarts."""
        return self.restarts * sum(self.rounds())


# standard measured on realesr-animevideov3-x4 (Set5 32x32 LR crops, benchmarks/strength.py): within
# 0.1 dB of issue 23's independent APGD; CARN-M and IMDN are still to be measured.
EFFORTS = {"quick": Effort(1, 50, 100), "standard": Effort(2, 50, 400), "thorough": Effort(4, 100, 1600)}


def check_effort(effort: str) -> str:
    if effort not in EFFORTS:
        raise ConfigError(f"effort must be one of {', '.join(EFFORTS)}, got {effort!r}")
    return effort


# ----------------------------------------------------------------------------- single values


def parse_alpha(text: str | float | Sequence[str | float], norm: str = "linf") -> list[float]:
    """Budgets from '1/255,8/255', '0.0314' or a list of those. An l_inf budget bounds each
    pixel and must lie in (0, 1]; an l_2 budget bounds the norm of the whole LR perturbation
    (in [0, 1] pixel units, all channels) and may be any positive number. Repeats are dropped:
    budgets that agree to 1/255000 (the unit of their labels and random seeds) are one."""
    items = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, Sequence) else [text]
    out: list[float] = []
    seen: set[int] = set()  # budgets in 1/255000 units: '8/255' and '0.031372549' are one budget
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        try:
            value = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"bad budget {s!r}: write it as 8/255 or 0.0314") from None
        if norm == "l2":
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"l2 budget {s} must be a positive number")
        elif not math.isfinite(value) or not 0 < value <= 1:
            raise ConfigError(f"budget {s} must lie in (0, 1] (image values are in [0, 1])")
        if round(value * 255000) not in seen:
            seen.add(round(value * 255000))
            out.append(value)
    if not out:
        raise ConfigError("no budget given (--alpha)")
    return out


def budget_list(eps: float | Sequence[float], norm: str = "linf") -> list[float]:
    """The budget(s) an attack object was given, validated, as a list."""
    return parse_alpha([eps] if isinstance(eps, (int, float)) else list(eps), norm)


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def check_batch(batch: int | None) -> int | None:
    """A batch size: None (chosen by sreval) or an integer >= 1."""
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        raise ConfigError(f"batch must be an integer >= 1, got {batch!r}")
    return batch


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_reference(reference: str) -> str:
    """A gradient attack's reference: hr, clean-sr (eq. 1) or psnr-sr (eq. 1 as measured)."""
    if reference not in REFERENCES + (MEASURED,):
        raise ConfigError(f"reference must be hr, clean-sr or {MEASURED}, got {reference!r}")
    return reference


def split_member(member: str) -> tuple[str, str | None]:
    """'apgd@clean-sr' -> ('apgd', 'clean-sr'); 'ifgsm' -> ('ifgsm', None: the run's reference)."""
    name, _, ref = member.partition("@")
    return name.strip(), (ref.strip() or None)


# ----------------------------------------------------------------------------- the shared loop


@dataclass(frozen=True)
class Method:
    """How the shared loop steps. `restarts` counts runs from fresh random starts (pgd, apgd);
    the best iterate by loss is kept per sample. `quantize_aware` makes the loss see the
    8-bit rounding of the delivered image (straight-through gradient, BPDA)."""

    name: str = "ifgsm"
    norm: str = "linf"
    restarts: int = 1
    momentum: float = 1.0  # mifgsm's decay mu (Dong et al.: 1.0)
    quantize_aware: bool = False

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ConfigError(f"attack method must be one of {', '.join(METHODS)}, got {self.name!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be linf or l2, got {self.norm!r}")
        if not isinstance(self.restarts, int) or self.restarts < 1:
            raise ConfigError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if self.restarts > 1 and self.name in ("ifgsm", "mifgsm"):
            raise ConfigError(f"{self.name} is deterministic from its start: restarts need pgd or apgd")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum <= 10):
            raise ConfigError(f"momentum must be in [0, 10], got {self.momentum}")

    @property
    def label(self) -> str:
        parts = [self.name, self.norm]
        if self.restarts > 1:
            parts.append(f"r{self.restarts}")
        return "-".join(parts)


@dataclass(frozen=True)
class LoopOptions:
    """The shared loop's options as one value, as jobs and the CLI pass them on."""

    method: str = "ifgsm"
    norm: str = "linf"
    restarts: int = 1
    quantize_aware: bool = False
    ensemble: tuple[str, ...] = STRONGEST
    effort: str = "standard"  # how the ensemble's APGD/PGD members converge (EFFORTS)

    def fields(self, *, ensemble: bool = True) -> dict[str, object]:
        out = {"method": self.method, "norm": self.norm, "restarts": self.restarts,
               "quantize_aware": self.quantize_aware}
        return {**out, "ensemble": self.ensemble, "effort": self.effort} if ensemble else out


@dataclass(frozen=True)
class BasicConfig:
    alphas: tuple[float, ...]
    steps: int = 50
    reference: str = "auto"
    quantize: bool = True
    seed: int = 0
    batch: int | None = None  # (image, budget) pairs per forward; None = auto (see auto_batch)
    precision: str = "fp32"  # of the attack's forward/backward; measurements stay float32
    method: str = "ifgsm"  # one of ATTACK_METHODS
    norm: str = "linf"
    restarts: int = 1  # pgd / apgd random restarts
    quantize_aware: bool = False  # the loss sees the 8-bit delivery (only with quantize; measured: no stronger)
    ensemble: tuple[str, ...] = STRONGEST  # the members of method 'strongest'
    effort: str = "standard"  # how the ensemble's APGD/PGD members converge (EFFORTS)

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_effort(self.effort)
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas), self.norm)))
        check_steps(self.steps)
        if self.reference != "auto":
            check_reference(self.reference)
        check_batch(self.batch)
        if self.method not in ATTACK_METHODS:
            raise ConfigError(f"attack method must be one of {', '.join(ATTACK_METHODS)}, got {self.method!r}")
        object.__setattr__(self, "ensemble", tuple(dict.fromkeys(self.ensemble)))
        if self.method == "strongest":
            if not self.ensemble:
                raise ConfigError("the ensemble needs at least one member")
            for m in self.ensemble:
                name, ref = split_member(m)
                if m == SHIFT:
                    continue
                if name not in METHODS or (ref is not None and ref not in REFERENCES + (MEASURED,)):
                    raise ConfigError(f"ensemble member {m!r}: write METHOD or METHOD@REFERENCE with a method of "
                                      f"{', '.join(METHODS)} and a reference of {', '.join(REFERENCES)} or "
                                      f"{MEASURED}, or shift")
        for m in self.members():
            if m != SHIFT:
                self.loop_method(m)

    def members(self) -> tuple[str, ...]:
        """What runs: the method, or every ensemble member ('apgd' or 'apgd@clean-sr')."""
        return self.ensemble if self.method == "strongest" else (self.method,)

    def loop_method(self, member: str) -> Method:
        """The shared loop's method for one member (restarts only where they mean something)."""
        name = split_member(member)[0]
        restarts = self.restarts if name in ("pgd", "apgd") else 1
        return Method(name, self.norm, restarts, quantize_aware=self.quantize_aware and self.quantize)

    def member_label(self, member: str) -> str:
        if member == SHIFT:
            return f"shift-{self.norm}"
        ref = split_member(member)[1]
        return self.loop_method(member).label + (f"@{ref}" if ref else "")

    def reference_for(self, samples: Sequence[Sample]) -> str:
        has_hr = all(s.hr is not None for s in samples)
        if self.reference == "auto":
            return "hr" if has_hr else "clean-sr"
        if self.reference == "hr" and not has_hr:
            raise DataError("--reference hr needs HR images, and this dataset has LR images only")
        return self.reference


# ----------------------------------------------------------------------------- defenses (sec. 5.3)

DEFENSE_NAMES = ("resize", "self-ensemble")  # sreval.defenses.DEFENSES implements each


def parse_defenses(names: str | Sequence[str]) -> tuple[str, ...]:
    """'resize,self-ensemble' or a list of names -> validated, de-duplicated tuple."""
    items = names.split(",") if isinstance(names, str) else [n for x in names for n in str(x).split(",")]
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in DEFENSE_NAMES:
            raise ConfigError(f"unknown defense {raw.strip()!r}: choose from {', '.join(DEFENSE_NAMES)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no defense given (--defense resize|self-ensemble)")
    return tuple(out)


# ----------------------------------------------------------------------------- sweeps


@dataclass(frozen=True)
class SweepConfig:
    """What decides the numbers of every cell (device, executor and paths do not)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...] = ("Set5",)
    attacks: tuple[str, ...] = ("basic",)
    alphas: tuple[float, ...] = tuple(parse_alpha(PAPER_ALPHAS))
    steps: int = 50
    reference: str = "auto"
    quantize: bool = True
    limit: int | None = None
    crop: int | None = None  # LR side of a centre crop of every image (HR cropped above it)
    seed: int = 0
    batch: int | None = None
    index_samples: int = 1024  # N_s of the robustness index (at the smallest budget)
    defenses: tuple[str, ...] = ("resize", "self-ensemble")
    keep_images: int = 1  # images per cell whose PNGs are kept for the report's figures
    method: str = "ifgsm"  # the shared loop's method; 'strongest' for basic cells (the others: ifgsm)
    norm: str = "linf"
    effort: str = "standard"  # of 'strongest' (EFFORTS)

    def __post_init__(self) -> None:
        for name in ("models", "datasets", "attacks", "defenses"):
            object.__setattr__(self, name, _names(getattr(self, name), name))
        object.__setattr__(self, "alphas", tuple(parse_alpha(list(self.alphas), self.norm)))
        check_steps(self.steps)
        BasicConfig(alphas=self.alphas, method=self.method, norm=self.norm, effort=self.effort)  # validates them
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise ConfigError(f"unknown attack(s) {', '.join(unknown)}: choose from {', '.join(ATTACKS)}")
        for a in self.attacks:
            if not ATTACKS[a].per_model and len(self.models) < 2:
                raise ConfigError(f"the {a} attack needs at least two models")
        for name in ("limit", "crop", "batch"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.index_samples, int) or self.index_samples < 1:
            raise ConfigError(f"index samples must be an integer >= 1, got {self.index_samples!r}")
        if not isinstance(self.keep_images, int) or self.keep_images < 0:
            raise ConfigError(f"keep_images must be an integer >= 0, got {self.keep_images!r}")
        if "defense" in self.attacks:
            object.__setattr__(self, "defenses", parse_defenses(list(self.defenses)))

    def method_for(self, attack: str) -> str:
        return self.method if self.method != "strongest" or attack == "basic" else "ifgsm"

    def loop(self, attack: str) -> LoopOptions:
        return LoopOptions(self.method_for(attack), self.norm, effort=self.effort)


def _names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    out = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    if not out and what != "defenses":
        raise ConfigError(f"no {what} given")
    return out


# ----------------------------------------------------------------------------- the main job


@dataclass(frozen=True)
class DemoConfig:
    """`sreval demo`: bicubic (the robust baseline), SPAN (PSNR-oriented, NTIRE 2024
    efficient-SR winner) and Real-CUGAN (GAN-trained) on the embedded photos. All three read
    the 64x64 LR photos (256x256 out), big enough to look at."""

    models: tuple[str, ...] = ("bicubic", "span-x4-ch48", "realcugan-x4")
    limit: int = 4  # embedded photos used (all four)
    crop: int = 64  # LR side of the centre crop (HR: crop x scale)
    steps: int = 10
    alphas: tuple[float, ...] = (2 / 255, 8 / 255)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("the demo needs at least one model")
        for name in ("limit", "crop", "steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
