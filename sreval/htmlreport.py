"""`sreval report RUN_DIR`: one self-contained HTML file (figures embedded as data: URIs) and a
Markdown summary (figures as PNG files beside it), from a sweep folder or any single job's
report.json.

Each section reproduces a figure or table of the paper from whatever the run holds, and is
left out when the run lacks its data: nothing is drawn empty. Sections are discovered from the
rows' `attack` values and from the reports' extra keys (universal, permeation, transfer,
targeted, robustness_index, defense).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sreval import figures as F
from sreval.errors import DataError
from sreval.attacks.partial import mask_bounds
from sreval.registry import ATTACKS
from sreval.evaluation import image_file_name
from sreval.io import read_image
from sreval.files import STDOUT, atomic_write_many
from sreval.findings import SHOWCASE, findings
from sreval.runview import CellView, RunView, load_run, mean, nearest

Row = dict[str, Any]
# The paper's showcase budgets: Fig. 2, 3, 4, 8 at 8/255, Fig. 6 at 4/255, Fig. 9 at 16/255.
# (SHOWCASE, 8/255, is the findings' budget too: one home, sreval.findings)
UNIVERSAL_SHOWCASE, TARGETED_SHOWCASE = 4 / 255, 16 / 255


# ----------------------------------------------------------------------------- helpers


def tag(alpha: float) -> str:
    """How the jobs name per-budget files: <image>_a<alpha*255>_lr.png."""
    return f"a{alpha * 255:g}"


def by_alpha(rows: Sequence[Row], metric: str, where: Callable[[Row], bool] = lambda r: True) -> list[tuple[float, float]]:
    alphas = sorted({r["alpha"] for r in rows if where(r) and isinstance(r.get("alpha"), (int, float))})
    pts = [(a, mean(r.get(metric) for r in rows if where(r) and r["alpha"] == a)) for a in alphas if a > 0]
    return [(a, v) for a, v in pts if v is not None]


def fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "inf"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "inf"
    return str(v)


def read_png(path: Path) -> np.ndarray | None:
    try:
        return read_image(path) if path.is_file() else None
    except DataError:
        return None


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass(frozen=True)
class Figure:
    png: bytes
    caption: str
    name: str


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    text: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _overview(run: RunView) -> Section:
    cfg = run.report.get("config") or {}
    alphas = cfg.get("alphas") or sorted({a for c in run.cells for a in c.alphas})
    facts = [["command", str(run.report.get("command"))],
             ["created", str(run.report.get("created"))],
             ["models", ", ".join(run.model_names) or "-"],
             ["datasets", ", ".join(run.datasets) or "-"],
             ["attacks", ", ".join(f"{a} ({ATTACKS[a].what})" if a in ATTACKS else a
                                   for a in dict.fromkeys(c.attack for c in run.cells)) or "-"],
             ["budgets alpha", ", ".join(F.budget_label(a) for a in alphas) or "-"]]
    for key in ("steps", "reference", "quantize", "crop", "limit", "seed", "index_samples"):
        if cfg.get(key) is not None:
            facts.append([key, fmt(cfg[key])])
    tables = [Table(["", ""], facts, "Run")]
    if run.models:
        tables.append(Table(["model", "scale", "parameters", "conv layers", "GAN-trained", "sha256"],
                            [[m["name"], f"x{m.get('scale')}", _int(m.get("params")), _int(m.get("conv_layers")),
                              fmt(m.get("gan_trained")) if m.get("gan_trained") is not None else "-",
                              str(m.get("sha256") or "")[:12]] for m in run.models], "Models (Table 1 facts)"))
    data = _data_rows(run)
    if data:
        tables.append(Table(["dataset", "images", "LR images"], data, "Data"))
    text = f"{len(run.cells)} finished cell(s)."
    if run.missing:
        text += f" Not finished (left out below): {'; '.join(run.missing)}."
    return Section("overview", "Overview", text, tables=tables)


def _data_rows(run: RunView) -> list[list[str]]:
    """Per dataset: how many images, and whether the LR images were read or generated."""
    seen: dict[str, list[str]] = {}
    for c in run.cells:
        lr = c.data.get("lr")
        if c.dataset in seen or lr is None:
            continue
        how = {"read": "read from the dataset", "generated": "generated from HR (MATLAB-exact bicubic)",
               "mixed": "read, some generated from HR"}.get(str(lr), str(lr))
        seen[c.dataset] = [c.dataset, str(c.data.get("n_images", "-")), how]
    return list(seen.values())


def _findings(run: RunView) -> Section | None:
    items = findings(run)
    if all(i.verdict == "not tested" for i in items):
        return None
    body = [[i.claim, i.source, i.verdict, i.evidence] for i in items]
    return Section("findings", "Findings - the paper's claims on this run",
                   "Each qualitative claim of Choi et al. (2019), and whether it holds on the models and data of this "
                   "run, with the numbers it rests on (sreval.findings). 'not tested': the run lacks what the claim needs.",
                   tables=[Table(["claim", "paper", "verdict", "evidence"], body)])


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def _means(rows: Sequence[Row], keys: Sequence[str], metric: str) -> dict[tuple[Any, ...], float | None]:
    """Mean of a metric per group of rows (groups in first-seen order)."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r.get(metric))
    return {k: mean(v) for k, v in groups.items()}


def _clean(run: RunView) -> Section | None:
    rows = [r for c in run.cells for r in c.rows if str(r.get("attack", "")).startswith("none")]
    if not rows:
        return None
    keys = ("model", "dataset", "attack")
    psnr, ssim = _means(rows, keys, "psnr_sr"), _means(rows, keys, "ssim_sr")
    body = [[str(m), str(d), str(a), fmt(psnr[(m, d, a)]), fmt(ssim[(m, d, a)], 4)] for m, d, a in psnr]
    return Section("clean", "Clean quality", "SR against the HR ground truth, no attack (Y PSNR, shave = scale). "
                   "Setting none+D: the same through defense D.",
                   tables=[Table(["model", "dataset", "setting", "PSNR (dB)", "SSIM"], body)])


def _curves_section(run: RunView, attack: str, sid: str, title: str, text: str,
                    metrics: Sequence[tuple[str, str, Callable[[Row], bool]]]) -> Section | None:
    cells = run.of(attack)
    if not cells:
        return None
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    alphas = sorted({a for c in cells for a in c.alphas})
    panels, table_rows = [], []
    for metric, label, where in metrics:  # a row of panels per metric, a column per dataset (as Fig. 1)
        for d in datasets:
            series = {c.model: by_alpha(c.rows, metric, where) for c in cells if c.dataset == d}
            series = {k: v for k, v in series.items() if v}
            if series:
                panels.append(F.Panel(f"{label} - {d}", "PSNR (dB)", series))
                table_rows += [[d, label, c.model] + [_cell_mean(c.rows, metric, where, a) for a in alphas]
                               for c in cells if c.dataset == d and c.model in series]
    if not panels:
        return None
    png = F.curves(panels, order=run.model_names, columns=min(len(datasets), 4) if len(datasets) > 1 else len(panels))
    header = ["dataset", "metric", "model"] + [F.budget_label(a) for a in alphas]
    return Section(sid, title, text, [Figure(png, title, sid)], [Table(header, table_rows)])


def _cell_mean(rows: Sequence[Row], metric: str, where: Callable[[Row], bool], alpha: float) -> str:
    """A table entry: the mean, 'inf' when every image was unchanged, '-' when not measured."""
    at = [r for r in rows if where(r) and r.get("alpha") == alpha and metric in r]
    return fmt(mean(r[metric] for r in at)) if at else "-"


def _basic(run: RunView) -> Section | None:
    return _curves_section(
        run, "basic", "fig1", "Fig. 1 - basic attack: LR and SR PSNR versus budget",
        "I-FGSM (eq. 1-3). LR PSNR: attacked vs clean LR. SR PSNR: SR of the attacked LR vs SR of the "
        "clean LR. Mean over the images of each dataset; higher = more robust.",
        [("psnr_lr", "LR", lambda r: True), ("psnr_sr", "SR", lambda r: True)])


def _grid_row(c: CellView, alpha: float) -> list[F.Tile | None] | None:
    name, img = c.first_image, c.folder / "images"
    if name is None:
        return None
    t = tag(alpha)
    files = [("LR (clean)", image_file_name(name, "lr_clean")),
             (f"LR (attacked, {F.budget_label(alpha)})", image_file_name(f"{name}_{t}", "lr")),
             ("SR (clean)", image_file_name(name, "sr_clean")), ("SR (attacked)", image_file_name(f"{name}_{t}", "sr"))]
    tiles = [(title, read_png(img / f)) for title, f in files]
    if tiles[1][1] is None or tiles[3][1] is None:
        return None
    return [F.Tile(title, im) if im is not None else None for title, im in tiles]


def _basic_images(run: RunView) -> Section | None:
    figs = []
    for d in run.datasets:
        cells = [c for c in run.of("basic") if c.dataset == d]
        alpha = nearest(sorted({a for c in cells for a in c.alphas}), SHOWCASE)
        if alpha is None:
            continue
        rows = [(c.model, r) for c in cells if (r := _grid_row(c, alpha)) is not None]
        if rows:
            image = cells[0].first_image
            figs.append(Figure(F.image_grid(rows, f"{d} / {image}, alpha = {F.budget_label(alpha)}"),
                               f"{d}: {image} at alpha = {F.budget_label(alpha)}", f"fig2-{d}"))
    if not figs:
        return None
    return Section("fig2", "Fig. 2 - clean and attacked images",
                   "Per model: clean LR, attacked LR, clean SR, attacked SR (first image of each dataset; "
                   "pixels shown unsmoothed). The attacked LR should look like the clean one; the attacked SR need not.",
                   figs)


def _size(run: RunView) -> Section | None:
    cells = run.of("basic")
    facts = {m["name"]: m for m in run.models}
    if len(cells) < 2:
        return None
    sizes = {d: sum(len(c.data.get("images") or []) for c in cells if c.dataset == d) for d in run.datasets}
    d = "BSD100" if "BSD100" in sizes else max(sizes, key=lambda k: sizes[k])
    alpha = nearest(sorted({a for c in cells for a in c.alphas}), SHOWCASE)
    points, left_out = [], []
    for c in cells:
        m = facts.get(c.model) or {}
        psnr = mean(r.get("psnr_sr") for r in c.rows if r.get("alpha") == alpha)
        if c.dataset != d or psnr is None:
            continue
        if not m.get("params"):
            left_out.append(c.model)
            continue
        points.append(F.SizePoint(c.model, int(m["params"]), int(m.get("conv_layers") or 0), psnr,
                                  bool(m.get("gan_trained"))))
    if len(points) < 2 or alpha is None:
        return None
    at = f"alpha = {F.budget_label(alpha)}"
    text = (f"SR PSNR of the basic attack at {at} on {d} versus model size "
            "(parameters from the ONNX metadata, conv layers counted on the x4 path as in Table 1).")
    if left_out:
        text += f" Not on the log axis (no parameters): {', '.join(left_out)}."
    body = [[p.name, f"{p.params:,}", str(p.conv_layers), fmt(p.gan), fmt(p.psnr)] for p in points]
    return Section("fig3", "Fig. 3 - robustness versus model size", text,
                   [Figure(F.size_scatter(points, f"{d}, {at}"), text, "fig3")],
                   [Table(["model", "parameters", "conv layers", "GAN", "SR PSNR (dB)"], body)])


def _transfer(run: RunView) -> Section | None:
    figs, tables = [], []
    for c in run.cells:
        sec = c.sections.get("transfer")
        if not sec:
            continue
        blocks = {b["alpha"]: b["psnr_sr"] for b in sec.get("matrix", [])}
        alpha = nearest(sorted(blocks), SHOWCASE)
        if alpha is None:
            continue
        names, matrix = sec["models"], blocks[alpha]
        title = f"{c.dataset}, alpha = {F.budget_label(alpha)}"
        figs.append(Figure(F.heatmap(names, matrix, title), f"transfer matrix, {title}", f"fig4-{c.dataset}"))
        body = [[s] + [fmt(v) for v in row] for s, row in zip(names, matrix)]
        tables.append(Table(["source \\ target"] + names, body, title))
    if not figs:
        return None
    return Section("fig4", "Fig. 4 - transferability",
                   "Adversarial LRs made on each source model (rows) fed to each target model (columns); "
                   "SR PSNR of the target (mean over images). Diagonal = white-box. Per column, a red frame marks the "
                   "most and a blue frame the least transferable source (diagonal excluded).", figs, tables)


def _universal(run: RunView) -> Section | None:
    held = any(r.get("group") == "holdout" for c in run.of("universal") for r in c.rows)
    metrics = [("psnr_lr", "LR", lambda r: True),
               ("psnr_sr", "SR" + (" (fit)" if held else ""), lambda r: r.get("group") != "holdout")]
    if held:
        metrics.append(("psnr_sr", "SR (held out)", lambda r: r.get("group") == "holdout"))
    return _curves_section(
        run, "universal", "fig5", "Fig. 5 - universal attack: LR and SR PSNR versus budget",
        "One perturbation per budget for all images (eq. 5-7), on centre crops of one size. "
        + ("Held-out images were never seen while fitting it." if held else ""), metrics)


def _universal_images(run: RunView) -> Section | None:
    rows = []
    alpha = None
    for c in run.of("universal"):
        perts = {p["alpha"]: p for p in (c.sections.get("universal") or {}).get("perturbations", [])}
        alpha = nearest(sorted(perts), UNIVERSAL_SHOWCASE)
        if alpha is None:
            continue
        pert = read_png(c.folder / perts[alpha]["png"])
        name, t = c.first_image, tag(alpha)
        lr = read_png(c.folder / "images" / image_file_name(f"{name}_{t}", "lr"))
        sr = read_png(c.folder / "images" / image_file_name(f"{name}_{t}", "sr"))
        if pert is None:
            continue
        rows.append((f"{c.model}\n{c.dataset}", [F.Tile(f"perturbation ({F.budget_label(alpha)}, amplified)", pert),
                                                  F.Tile("LR (attacked)", lr) if lr is not None else None,
                                                  F.Tile("SR (attacked)", sr) if sr is not None else None]))
    if not rows:
        return None
    return Section("fig6", "Fig. 6 - the universal perturbation",
                   "The perturbation (shown as delta / (2 alpha) + 0.5: grey = 0), an image with it added, "
                   "and that image's SR.", [Figure(F.image_grid(rows), "universal perturbation", "fig6")])


def _partial(run: RunView) -> Section | None:
    sec = _curves_section(
        run, "partial", "fig7", "Fig. 7 - partial attack: SR PSNR outside the attacked region",
        "Only the central half of the LR is perturbed (eq. 8-10); SR PSNR is measured outside the HR "
        "counterpart of that region: how far the perturbation permeates.",
        [("psnr_sr", "SR (outside)", lambda r: True), ("psnr_sr_inside", "SR (inside)", lambda r: True)])
    if sec is None:
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    alpha = None
    for c in run.of("partial"):
        profs = {p["alpha"]: p for p in c.sections.get("permeation") or []}
        alpha = nearest(sorted(profs), SHOWCASE)
        if alpha is not None and c.dataset == run.of("partial")[0].dataset:
            p = profs[alpha]
            series[c.model] = list(zip(p["distance_lr"], p["mse_y"]))
    if series:
        title = f"permeation, {run.of('partial')[0].dataset}, alpha = {F.budget_label(alpha)}"  # type: ignore[arg-type]
        sec.figures.append(Figure(F.profile(series, title), title + ": MSE of Y per ring of HR pixels at "
                                  "a given distance from the attacked region", "fig7-permeation"))
    return sec


def _partial_images(run: RunView) -> Section | None:
    rows = []
    alpha = None
    for c in run.of("partial"):
        alpha = nearest(c.alphas, SHOWCASE)
        name = c.first_image
        if alpha is None or name is None:
            continue
        t, img = tag(alpha), c.folder / "images"
        lr, sr, sr0 = (read_png(img / f) for f in (image_file_name(f"{name}_{t}", "lr"),
                                                    image_file_name(f"{name}_{t}", "sr"),
                                                    image_file_name(name, "sr_clean")))
        if lr is None or sr is None:
            continue
        top, bottom, left, right = mask_bounds(*lr.shape[:2])
        s = sr.shape[0] // lr.shape[0]
        box_lr = (top, left, bottom - top, right - left)
        box_hr = (top * s, left * s, (bottom - top) * s, (right - left) * s)
        tiles = [F.Tile("LR (attacked)", lr, box_lr), F.Tile("SR (clean)", sr0) if sr0 is not None else None,
                 F.Tile(f"SR (attacked, {F.budget_label(alpha)})", sr, box_hr)]
        rows.append((f"{c.model}\n{c.dataset}", [t for t in tiles if t is not None]))
    if not rows:
        return None
    return Section("fig8", "Fig. 8 - partial attack images",
                   "Yellow boxes: the attacked region (LR) and its HR counterpart; damage outside the box "
                   "has permeated through the network.", [Figure(F.image_grid(rows), "partial attack", "fig8")])


def _targeted(run: RunView) -> Section | None:
    cells = [c for c in run.of("targeted") if c.sections.get("targeted")]
    if not cells:
        return None
    keys = ("psnr_target_hr", "psnr_source_hr", "psnr_lr", "psnr_lr_target")
    body, figs = [], []
    for c in cells:
        clean = c.sections["targeted"].get("clean") or {}
        body.append([c.model, "clean"] + [fmt(clean.get(k)) for k in keys] + ["-"])
        for r in sorted(c.rows, key=lambda r: r["alpha"]):
            body.append([c.model, F.budget_label(r["alpha"])] + [fmt(r.get(k)) for k in keys]
                        + [fmt(r.get("closer_to_target"))])
        row = _targeted_tiles(c)
        if row:
            figs.append(row)
    sec = Section("fig9", "Fig. 9 - targeted attack",
                  f"Eq. 11: the SR output is pushed towards a target HR frame "
                  f"({cells[0].sections['targeted'].get('source')} -> {cells[0].sections['targeted'].get('target')}). "
                  "Success: the attacked SR is closer to the target than to its own HR, while the attacked LR "
                  "stays closer to its own LR than to the target's.",
                  tables=[Table(["model", "alpha", "PSNR SR vs target HR", "PSNR SR vs source HR",
                                 "PSNR LR vs clean LR", "PSNR LR vs target LR", "closer to target"], body)])
    if figs:
        sec.figures.append(Figure(F.image_grid(figs), "targeted attack", "fig9"))
    return sec


def _targeted_tiles(c: CellView) -> tuple[str, list[F.Tile | None]] | None:
    sec, img = c.sections["targeted"], c.folder / "images"
    alpha = nearest(c.alphas, TARGETED_SHOWCASE)
    src = sec.get("source")
    if alpha is None or not src:
        return None
    t = tag(alpha)
    hr_src = read_png(Path(str(c.data.get("source", "")))) if c.data.get("source") else None
    hr_tgt = read_png(Path(str(c.data.get("target", "")))) if c.data.get("target") else None
    tiles = [("LR (attacked)", read_png(img / image_file_name(f"{src}_{t}", "lr"))),
             ("LR (target)", read_png(img / image_file_name(src, "lr_target"))),
             ("SR (clean)", read_png(img / image_file_name(src, "sr_clean"))),
             (f"SR (attacked, {F.budget_label(alpha)})", read_png(img / image_file_name(f"{src}_{t}", "sr"))),
             ("HR (original)", hr_src), ("HR (target)", hr_tgt)]
    if tiles[3][1] is None:
        return None
    return c.model, [F.Tile(k, v) if v is not None else None for k, v in tiles]


def _index(run: RunView) -> Section | None:
    points: dict[str, list[tuple[float, float]]] = {}
    body = []
    for c in run.of("index"):
        rows = [r for r in c.rows if r.get("attack") == "index" and isinstance(r.get("robustness_index"), (int, float))]
        if not rows:
            continue
        label = f"{c.model} ({c.dataset})" if len(run.datasets) > 1 else c.model
        points[label] = [(r["robustness_index"], r.get("psnr_sr_basic")) for r in rows]
        ri = c.sections.get("robustness_index") or {}
        body.append([c.model, c.dataset, fmt(mean(r["robustness_index"] for r in rows), 4),
                     fmt(mean(r.get("psnr_sr_basic") for r in rows)), _corr(ri.get("pearson")), _corr(ri.get("spearman"))])
    if not points:
        return None
    alpha = next((c.sections.get("robustness_index", {}).get("alpha") for c in run.of("index")), None)
    title = f"robustness index vs SR PSNR, alpha = {F.budget_label(alpha)}" if alpha else "robustness index vs SR PSNR"
    return Section("fig10", "Fig. 10 - robustness index",
                   "Index = max over N_s random perturbations of the L1 norm of the loss gradient (sec. 5.2); "
                   "each point an image. A higher index should go with a lower PSNR (negative correlation).",
                   [Figure(F.index_scatter(points, title), title, "fig10")],
                   [Table(["model", "dataset", "mean index", "mean SR PSNR (basic)", "Pearson", "Spearman"], body)])


def _corr(v: Any) -> str:
    return "n/a" if v is None else fmt(v, 3)


def _defense(run: RunView) -> Section | None:
    rows = [r for c in run.cells for r in c.rows
            if str(r.get("attack", "")).startswith("basic+") or (r.get("attack") == "basic" and "defense" in c.sections)]
    if not any(str(r.get("attack", "")).startswith("basic+") for r in rows):
        return None
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    psnr = _means(rows, ("model", "dataset", "alpha", "attack"), "psnr_sr")
    settings = dict.fromkeys(k[:3] for k in psnr)
    body = [[str(m), str(d), F.budget_label(a)] + [fmt(psnr.get((m, d, a, at))) if (m, d, a, at) in psnr else "-"
                                                  for at in attacks] for m, d, a in settings]
    return Section("defense", "Defenses (sec. 5.3)",
                   "SR PSNR (attacked vs clean SR through the same pipeline). basic+D: the bare model's adversarial "
                   "LR fed through defense D (the paper's setting); basic+D-adaptive: the attack made through D.",
                   tables=[Table(["model", "dataset", "alpha"] + attacks, body)])


def _mean_curve(rows: Sequence[Row]) -> list[tuple[float, float]]:
    """Mean over images of each loss curve divided by its own last value (1 = where it ended)."""
    curves = [r["loss_curve"] for r in rows if r.get("loss_curve") and r["loss_curve"][-1]]
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [(float(i), float(np.mean([c[i] / c[-1] for c in curves]))) for i in range(n)]


def _evidence(run: RunView) -> Section | None:
    """Sanity checks of every attack cell and its loss per iteration (sreval.attacks.evidence)."""
    cells = [c for c in run.cells if c.sections.get("evidence")]
    if not cells:
        return None
    body, panels = [], []
    for c in cells:
        for chk in c.sections["evidence"].get("checks", []):
            body.append([c.model, c.dataset, chk["name"], "ok" if chk["ok"] else "FAILED", chk["detail"]])
        series = {F.budget_label(a): _mean_curve([r for r in c.rows if r.get("alpha") == a]) for a in c.alphas}
        series = {k: v for k, v in series.items() if v}
        if series:
            panels.append(F.Panel(f"{c.model} - {c.dataset}", "loss / final loss", series))
    failed = sum(row[3] == "FAILED" for row in body)
    text = ("Evidence that the attack was strong and converged: checks run with every basic attack "
            "(gradient finite and non-zero; loss rose; best of restarts; damage grows with the budget; a "
            "near-zero budget changes almost nothing; half the steps is not stronger). "
            + (f"{failed} check(s) FAILED: treat those numbers as an upper bound on robustness only."
               if failed else "Every check passed."))
    figures = [Figure(F.loss_curves(panels[:12], "loss per iteration"), "loss per iteration", "evidence")] if panels else []
    return Section("evidence", "Attack evidence (sanity checks)", text, figures,
                   [Table(["model", "dataset", "check", "verdict", "detail"], body)])


def _conventions(run: RunView) -> Section | None:
    conv = run.conventions
    if not conv:
        return None
    per_attack = {a: c for a, c in conv.items() if isinstance(c, dict)}
    values: dict[str, dict[str, list[str]]] = {}
    for attack, c in per_attack.items():
        for k, v in c.items():
            values.setdefault(k, {}).setdefault(json.dumps(v) if not isinstance(v, str) else v, []).append(attack)
    body = []
    for k, by_value in values.items():
        for v, attacks in by_value.items():
            body.append([k, v, "all" if len(attacks) == len(per_attack) else ", ".join(attacks)])
    env = run.report.get("environment") or {}
    return Section("conventions", "Conventions",
                   "How every number above was measured (recorded in each report.json).",
                   tables=[Table(["what", "convention", "attacks"], body),
                           Table(["", ""], [[k, str(v)] for k, v in env.items()], "Environment")])


def _registered(run: RunView) -> list[Section]:
    """The attacks of the registry that have no figure of the paper (run with `sreval run`):
    LR and SR PSNR versus budget, one section each, titled from the registry."""
    out = []
    for name, entry in ATTACKS.items():
        if entry.cli != "run":
            continue
        section = _curves_section(
            run, name, f"attack-{name}", f"{entry.what}: LR and SR PSNR versus budget",
            f"Attack '{name}' of the registry. LR PSNR: attacked vs clean LR; SR PSNR: SR of the attacked LR "
            "vs SR of the clean LR. Mean over the images of each dataset; higher = more robust.",
            [("psnr_lr", "LR", lambda r: True), ("psnr_sr", "SR", lambda r: True)])
        if section is not None:
            out.append(section)
    return out


SECTIONS: list[Callable[[RunView], Section | list[Section] | None]] = [
    _overview, _findings, _clean, _basic, _basic_images, _size, _transfer, _universal, _universal_images, _partial,
    _partial_images, _targeted, _index, _defense, _registered, _evidence, _conventions,
]


def build_sections(run: RunView) -> list[Section]:
    out: list[Section] = []
    for fn in SECTIONS:
        made = fn(run)
        out += made if isinstance(made, list) else [made] if made is not None else []
    return out


# ----------------------------------------------------------------------------- rendering


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav ul{columns:2;font-size:.95em}figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}caption{text-align:left;font-weight:600;padding:.3em 0}
.meta{color:#666;font-size:.9em}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f'<td{_numeric(c)}>{html.escape(c)}</td>' for c in row) + "</tr>" for row in t.rows)
    cap = f"<caption>{html.escape(t.title)}</caption>" if t.title else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _numeric(text: str) -> str:
    """Numbers right-aligned (a class), words left."""
    try:
        float(text.replace(",", ""))
    except ValueError:
        return ' class="n"' if text == "inf" else ""
    return ' class="n"'


def render_html(run: RunView, sections: Sequence[Section]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>sreval report: {html.escape(run.run_dir.name)}</title><style>{CSS}</style></head><body>",
             f"<h1>sreval report: {html.escape(run.run_dir.name)}</h1>",
             f'<p class="meta">Adversarial robustness of super-resolution models (Choi et al., ICCV 2019). '
             f"Rendered {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
             f"{html.escape(str(run.run_dir))}.</p>",
             "<nav><ul>" + "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
             + "</ul></nav>"]
    for s in sections:
        parts.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>')
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(f.caption)}">'
                         f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        parts += [_html_table(t) for t in s.tables]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    """Text from data as inert Markdown: HTML escaped (a name may hold <script>), and the
    characters that would make links, emphasis or table cells backslashed."""
    text = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", text)


def _md_table(t: Table) -> list[str]:
    lines = [f"**{t.title}**", ""] if t.title else []
    lines.append("| " + " | ".join(_md_cell(h) or " " for h in t.header) + " |")
    lines.append("|" + "|".join("---" for _ in t.header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return lines + [""]


def render_markdown(run: RunView, sections: Sequence[Section], figure_paths: dict[str, str]) -> str:
    lines = [f"# sreval report: {_md_cell(run.run_dir.name)}", "",
             "Full report with every figure: `report.html` (self-contained).", ""]
    for s in sections:
        lines += [f"## {s.title}", "", _md_cell(s.text), ""]
        lines += [f"![{_md_cell(f.caption)}]({figure_paths[f.name]})\n" for f in s.figures if f.name in figure_paths]
        for t in s.tables:
            lines += _md_table(t)
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Rendered:
    html: Path
    markdown: Path
    sections: list[str]  # ids of the sections drawn
    figures: int


def render_report(run_dir: Path, *, html_path: Path | None = None, markdown_path: Path | None = None) -> Rendered:
    """Write report.html (self-contained) and report.md (+ figures/*.png) for a run folder."""
    run = load_run(Path(run_dir))
    sections = build_sections(run)
    html_path = Path(html_path) if html_path else run.run_dir / "report.html"
    markdown_path = Path(markdown_path) if markdown_path else run.run_dir / "report.md"
    # '-' is standard output; the Markdown's figures then go to the run folder
    fig_dir = (run.run_dir if str(markdown_path) == STDOUT else markdown_path.parent) / "figures"
    paths: dict[str, str] = {}
    files: dict[Path, str | bytes] = {}
    for s in sections:
        for f in s.figures:
            files[fig_dir / f"{_file_name(f.name)}.png"] = f.png
            paths[f.name] = f"figures/{_file_name(f.name)}.png"
    files[html_path] = render_html(run, sections)
    files[markdown_path] = render_markdown(run, sections, paths)
    if html_path == markdown_path:
        raise DataError(f"--html and --markdown are both {html_path}")
    atomic_write_many(files)  # every file of the report, or none
    return Rendered(html_path, markdown_path, [s.id for s in sections], len(paths))


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


__all__ = ["load_run", "RunView", "CellView", "Section", "Table", "Figure", "build_sections", "render_html",
           "render_markdown", "render_report", "Rendered", "SECTIONS"]
