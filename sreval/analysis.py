"""Analyses across attacks and models: transferability (paper sec. 4.1) and the attack-agnostic
robustness index (sec. 5.2) with its correlation to the basic attack's SR PSNR."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sreval.attacks.basic import attack_image, auto_batch
from sreval.attacks.common import in_chunks
from sreval.config import BasicConfig, check_batch, parse_alpha
from sreval.data import Sample
from sreval.errors import ConfigError, DataError
from sreval.report import csv_cell
from sreval.evaluation import ImageSaver, Progress, Row, images, measure, measure_hr, super_resolve

# ----------------------------------------------------------------------------- transferability


def unique_names(names: Sequence[str]) -> list[str]:
    """Model names as row/column labels; repeats get #2, #3, ... so the matrix stays readable."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


def common_scale(scales: Mapping[str, int]) -> int:
    """The one scale all models share; adversarial LRs cannot cross scales."""
    if len(set(scales.values())) != 1:
        listed = ", ".join(f"{n} x{s}" for n, s in scales.items())
        raise ConfigError(f"transfer needs models of one scale, got {listed}")
    return next(iter(scales.values()))


@dataclass(frozen=True)
class TransferResult:
    rows: list[Row]
    names: list[str]
    reference: str
    matrix: dict[float, list[list[float | None]]]  # alpha -> [source][target] mean SR PSNR (Y)


def run_transfer(
    models: Mapping[str, nn.Module],
    samples: Sequence[Sample],
    scale: int,
    cfg: BasicConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
    saver: ImageSaver = ImageSaver(None),
) -> TransferResult:
    """Basic-attack examples made on each source model, fed to every target model. A row per
    (image, budget, source, target); psnr_sr = PSNR(f_t(X0), f_t(X)). Diagonal = white-box."""
    reference = cfg.reference_for(samples)
    names = list(models)
    rows: list[Row] = []
    for _, s, x0, hr in images(samples, device, progress):
        clean = {t: super_resolve(m, x0) for t, m in models.items()}
        for src in names:
            xs, _ = attack_image(models[src], x0, hr, cfg, reference)
            for alpha, x in zip(cfg.alphas, xs):
                rows += _transfer_rows(s, src, alpha, x[None], x0, models, clean, scale, saver)
    return TransferResult(rows, names, reference, {a: transfer_matrix(rows, names, a) for a in cfg.alphas})


def _transfer_rows(
    s: Sample, src: str, alpha: float, x: Tensor, x0: Tensor, models: Mapping[str, nn.Module],
    clean: Mapping[str, Tensor], scale: int, saver: ImageSaver,
) -> list[Row]:
    rows = []
    for tgt, m in models.items():
        sr = super_resolve(m, x)
        rows.append({
            "image": s.name, "attack": "transfer", "alpha": alpha, "source": src, "target": tgt,
            "group": f"{src} -> {tgt}", "white_box": src == tgt,
            **measure(x0, x, clean[tgt], sr, scale), **measure_hr(sr, s.hr, scale),
        })
        saver(f"{s.name}_a{alpha * 255:g}_{src}_to_{tgt}", sr=sr)
    return rows


def transfer_matrix(rows: Sequence[Row], names: Sequence[str], alpha: float) -> list[list[float | None]]:
    """Mean SR PSNR (Y) over images, rows = source, columns = target (None if all infinite)."""
    def cell(src: str, tgt: str) -> float | None:
        vals = [r["psnr_sr"] for r in rows
                if r["source"] == src and r["target"] == tgt and r["alpha"] == alpha]
        fin = [v for v in vals if math.isfinite(v)]
        return float(np.mean(fin)) if fin else None

    return [[cell(s, t) for t in names] for s in names]


def matrix_csv(names: Sequence[str], matrix: Mapping[float, list[list[float | None]]]) -> str:
    """One block per budget: alpha, source, then one column per target model (SR PSNR, dB, 4
    decimals; empty where infinite). Model names are quoted text, neutralised as results.csv's."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    w.writerow([csv_cell(c) for c in ("alpha", "source", *names)])
    for alpha, m in matrix.items():
        for src, row in zip(names, m):
            w.writerow([float(f"{alpha:.6g}"), csv_cell(src), *("" if v is None else round(v, 4) for v in row)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- robustness index


@dataclass(frozen=True)
class IndexConfig:
    """N_s random perturbations in [-alpha, alpha]; `batch` of them per forward/backward (halved
    on out-of-memory; None: auto, as the attacks: 1 on CPU, where batching buys nothing, else
    what fits). The default, 64, is `sreval index`'s."""

    alpha: float = 1 / 255
    samples: int = 1024
    batch: int | None = 64  # perturbations per forward+backward (halved on out-of-memory)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", parse_alpha([self.alpha])[0])
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"samples (N_s) must be an integer >= 1, got {self.samples!r}")
        check_batch(self.batch)


def _perturbations(shape: tuple[int, ...], alpha: float, seed: int, image: int, sl: slice) -> Tensor:
    """Perturbation i is drawn from its own seed, so the index does not depend on the batch
    size (nor on an out-of-memory halving of it)."""
    out = []
    for i in range(sl.start, sl.stop):
        state = int(np.random.SeedSequence([seed, image, i]).generate_state(1)[0])
        g = torch.Generator().manual_seed(state)
        out.append(torch.rand(shape, generator=g) * 2 - 1)
    return torch.stack(out) * alpha


def gradient_norms(model: nn.Module, x0: Tensor, cfg: IndexConfig, image: int = 0) -> Tensor:
    """b_i = || grad_X L(X0 + Delta_i, X0) ||_1, i < N_s, with L the L2 norm of eq. 1
    (X clipped to [0, 1], the images an attacker can deliver). x0: (1, C, H, W)."""
    with torch.no_grad():
        ref = model(x0)

    def part(sl: slice) -> Tensor:
        delta = _perturbations(tuple(x0.shape[1:]), cfg.alpha, cfg.seed, image, sl).to(x0.device)
        x = (x0 + delta).clamp(0.0, 1.0).requires_grad_(True)
        with torch.enable_grad():
            loss = (model(x) - ref).flatten(1).norm(dim=1).sum()
            (g,) = torch.autograd.grad(loss, x)
        return g.abs().flatten(1).sum(1)

    # CPU: one perturbation per pass (measured: batching only costs cache there)
    wanted = cfg.samples if x0.device.type == "cuda" else 1
    return in_chunks(part, cfg.samples, cfg.batch or auto_batch(model, x0, wanted))


def run_index(
    model: nn.Module,
    samples: Sequence[Sample],
    cfg: IndexConfig,
    *,
    device: torch.device,
    progress: Progress | None = None,
) -> list[Row]:
    """One row per image: robustness_index = max_i b_i, with the mean and spread of b_i."""
    rows: list[Row] = []
    for k, s, x0, _ in images(samples, device, progress):
        b = gradient_norms(model, x0, cfg, k).cpu().double().numpy()
        rows.append({"image": s.name, "attack": "index", "alpha": cfg.alpha,
                     "robustness_index": float(b.max()), "b_mean": float(b.mean()),
                     "b_std": float(b.std()), "samples": cfg.samples})
    return rows


def ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    r = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r; None with fewer than 3 pairs or a constant side (r is undefined)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) != len(y):
        raise ConfigError(f"correlation of {len(x)} against {len(y)} values")
    if len(x) < 3:
        return None
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else None


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the (average) ranks."""
    return pearson(ranks(np.asarray(a, float)), ranks(np.asarray(b, float)))


def basic_psnr_from_report(report: Mapping[str, Any], alpha: float, images: Sequence[str],
                           sha256: str | None = None) -> dict[str, float]:
    """SR PSNR per image of the basic attack at `alpha` in a previous report (same model)."""
    theirs = (report.get("model") or {}).get("sha256")
    if sha256 and theirs and theirs != sha256:
        raise ConfigError(f"the attack report is for another model ({(report.get('model') or {}).get('name')}, "
                          f"sha256 {theirs[:12]}...), not this one ({sha256[:12]}...)")
    found = {r["image"]: r.get("psnr_sr") for r in report.get("results", [])
             if r.get("attack") == "basic" and isinstance(r.get("alpha"), (int, float))
             and abs(r["alpha"] - alpha) < 1e-9}
    missing = [n for n in images if n not in found]
    if missing:
        raise DataError(f"the attack report has no basic-attack row at alpha {alpha * 255:g}/255 for "
                        f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {n: (math.inf if found[n] is None else float(found[n])) for n in images}


def correlation(index_rows: Sequence[Row], psnr_sr: Mapping[str, float]) -> dict[str, Any]:
    """Pearson and Spearman between the index and the attack's SR PSNR over the images with a
    finite PSNR. A vulnerable model/image has a high index and a low PSNR: expect negative."""
    pairs = [(r["robustness_index"], psnr_sr[r["image"]]) for r in index_rows
             if math.isfinite(psnr_sr.get(r["image"], math.nan))]
    idx, ps = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"n": len(pairs), "pearson": pearson(idx, ps), "spearman": spearman(idx, ps)}


__all__ = ["run_transfer", "TransferResult", "transfer_matrix", "matrix_csv", "common_scale",
           "unique_names", "IndexConfig", "gradient_norms", "run_index", "pearson", "spearman",
           "ranks", "basic_psnr_from_report", "correlation"]
