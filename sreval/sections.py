"""The report's sections: each reproduces a figure or table of the paper from whatever a run
holds (basic, size, transfer, universal, partial, targeted, index, defenses, and one section per
registered attack object), and is left out when the run lacks its data: nothing is drawn empty.
`sreval.htmlreport` adds the run-level sections and renders them all."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sreval import figures as F
from sreval.attacks.partial import mask_bounds
from sreval.errors import DataError
from sreval.evaluation import image_file_name
from sreval.findings import SHOWCASE
from sreval.io import read_image
from sreval.registry import ATTACKS
from sreval.report import Row
from sreval.runview import CellView, RunView, mean, nearest

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


def read_png(path: Path | None) -> np.ndarray | None:
    """An image of the run (None: there is none, or it is not readable)."""
    try:
        return read_image(path) if path is not None and path.is_file() else None
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


def int_text(v: Any) -> str:
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
    name = c.first_image
    if name is None:
        return None
    t = tag(alpha)
    files = [("LR (clean)", image_file_name(name, "lr_clean")),
             (f"LR (attacked, {F.budget_label(alpha)})", image_file_name(f"{name}_{t}", "lr")),
             ("SR (clean)", image_file_name(name, "sr_clean")), ("SR (attacked)", image_file_name(f"{name}_{t}", "sr"))]
    tiles = [(title, read_png(c.file("images", f))) for title, f in files]
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
        pert = read_png(c.file(str(perts[alpha]["png"])))
        name, t = c.first_image, tag(alpha)
        lr = read_png(c.file("images", image_file_name(f"{name}_{t}", "lr")))
        sr = read_png(c.file("images", image_file_name(f"{name}_{t}", "sr")))
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
        t = tag(alpha)
        lr, sr, sr0 = (read_png(c.file("images", f)) for f in (image_file_name(f"{name}_{t}", "lr"),
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
    sec = c.sections["targeted"]
    alpha = nearest(c.alphas, TARGETED_SHOWCASE)
    src = sec.get("source")
    if alpha is None or not src:
        return None
    t = tag(alpha)
    tiles = [(title, read_png(c.file("images", image_file_name(name, kind)))) for title, name, kind in (
        ("LR (attacked)", f"{src}_{t}", "lr"), ("LR (target)", src, "lr_target"), ("SR (clean)", src, "sr_clean"),
        (f"SR (attacked, {F.budget_label(alpha)})", f"{src}_{t}", "sr"), ("HR (original)", src, "hr"),
        ("HR (target)", src, "hr_target"))]
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


def mean_curve(rows: Sequence[Row]) -> list[tuple[float, float]]:
    """Mean over images of each loss curve divided by its own last value (1 = where it ended)."""
    curves = [r["loss_curve"] for r in rows if r.get("loss_curve") and r["loss_curve"][-1]]
    if not curves:
        return []
    n = min(len(c) for c in curves)
    return [(float(i), float(np.mean([c[i] / c[-1] for c in curves]))) for i in range(n)]


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


# In the report's order, after the overview and the findings.
PAPER_SECTIONS: list[Callable[[RunView], Section | list[Section] | None]] = [
    _clean, _basic, _basic_images, _size, _transfer, _universal, _universal_images, _partial, _partial_images,
    _targeted, _index, _defense, _registered,
]
