"""The paper's figures as PNG bytes, drawn with matplotlib's object API (no pyplot: no global
state, no display, safe in threads and on headless machines).

Every function takes plain data (model -> [(x, y)], a matrix, images as HxWx3 float arrays)
and returns PNG bytes; what to draw from a run is decided in `sreval.sections`. Texts are drawn as written (`as_written`).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

Series = Mapping[str, Sequence[tuple[float, float]]]  # label -> [(x, y)], drawn as one line each
D = TypeVar("D", bound=Callable[..., bytes])
DPI = 100
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def as_written(draw: D) -> D:
    """A figure function whose texts are drawn as written: model, dataset and image names come
    from files and users, and '$' in one must not start matplotlib's mathtext (a Text reads the
    setting when it is made)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        with rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def budget_label(alpha: float) -> str:
    """8/255 for budgets on the 8-bit grid, else the value."""
    k = alpha * 255
    return f"{k:g}/255" if abs(k - round(k)) < 1e-6 else f"{alpha:.4g}"


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    series: Series


@as_written
def curves(panels: Sequence[Panel], *, order: Sequence[str] = (), columns: int | None = None,
           xlabel: str = "budget alpha (x/255)") -> bytes:
    """PSNR versus budget (Fig. 1, 5, 7): one panel per (metric, dataset), one line per model,
    the same colour for a model in every panel; budgets on a log2 axis as in the paper."""
    names = list(dict.fromkeys(list(order) + [n for p in panels for n in p.series]))
    cols = columns or min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for name, pts in panel.series.items():
            pts = sorted((x, y) for x, y in pts if y is not None and math.isfinite(y))
            if not pts:
                continue
            i = names.index(name)
            ax.plot([x * 255 for x, _ in pts], [y for _, y in pts], marker=MARKERS[i % len(MARKERS)],
                    color=colour(i), label=name, linewidth=1.5, markersize=4)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_ticks())
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    _legend(fig, names)
    fig.tight_layout(rect=(0, 0, 1, 0.92 if len(names) > 4 else 0.94))
    return png(fig)


def _ticks() -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}")


def _legend(fig: Figure, names: Sequence[str]) -> None:
    handles = [Line2D([], [], color=colour(i), marker=MARKERS[i % len(MARKERS)], label=n)
               for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(names), 6), fontsize=9, frameon=False)


@dataclass(frozen=True)
class SizePoint:
    name: str
    params: int
    conv_layers: int
    psnr: float
    gan: bool


@as_written
def size_scatter(points: Sequence[SizePoint], title: str) -> bytes:
    """Fig. 3: SR PSNR versus parameters and versus conv layers; blue = GAN-trained, red = not
    (the paper's colours). Models without parameters (bicubic) cannot sit on a log axis: they
    are left out and named in the caption by the caller."""
    fig = Figure(figsize=(10, 3.8))
    for k, (attr, label) in enumerate((("params", "parameters"), ("conv_layers", "convolutional layers"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for p in points:
            x = getattr(p, attr)
            if x <= 0 or not math.isfinite(p.psnr):
                continue
            ax.scatter([x], [p.psnr], color="#1f77b4" if p.gan else "#d62728", s=36)
            ax.annotate(p.name, (x, p.psnr), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_ticks())
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^1, 3x10^1, ... overlap
        ax.margins(x=0.25, y=0.12)  # room for the names beside the points
        ax.set_xlabel(f"number of {label}", fontsize=9)
        ax.set_ylabel("SR PSNR (dB)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_title(f"({'ab'[k]}) {label}", fontsize=10)
    fig.suptitle(title + "   (blue: GAN-trained, red: not)", fontsize=10)
    fig.tight_layout()
    return png(fig)


@as_written
def heatmap(names: Sequence[str], matrix: Sequence[Sequence[float | None]], title: str) -> bytes:
    """Fig. 4: SR PSNR of the target (columns) fed the source's (rows) adversarial inputs.
    Per target column, the lowest off-diagonal value is framed red and the highest blue (the
    paper's marking); the diagonal (white-box) is bold."""
    n = len(names)
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig = Figure(figsize=(1.1 * n + 2.6, 0.8 * n + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, cmap="viridis")
    fig.colorbar(im, ax=ax, label="SR PSNR (dB)")
    ax.set_xticks(range(n), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("target model")
    ax.set_ylabel("source model")
    lo, hi = np.nanmin(data) if np.isfinite(data).any() else 0.0, np.nanmax(data) if np.isfinite(data).any() else 1.0
    for j in range(n):
        off = [(data[i, j], i) for i in range(n) if i != j and np.isfinite(data[i, j])]
        marks = {min(off)[1]: "#e00000", max(off)[1]: "#1060ff"} if len(off) > 1 else {}
        for i in range(n):
            v = data[i, j]
            bright = np.isfinite(v) and hi > lo and (v - lo) / (hi - lo) > 0.6  # viridis is light at the top
            ax.text(j, i, f"{v:.2f}" if np.isfinite(v) else "inf", ha="center", va="center", fontsize=8,
                    color="black" if bright else "white", fontweight="bold" if i == j else "normal")
            if i in marks:
                ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, edgecolor=marks[i], linewidth=2.5))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


@dataclass(frozen=True)
class Tile:
    title: str
    image: np.ndarray  # HxWx3 float in [0, 1]
    box: tuple[int, int, int, int] | None = None  # (top, left, height, width) drawn in yellow


@as_written
def image_grid(rows: Sequence[tuple[str, Sequence[Tile | None]]], title: str = "",
               tile_inches: float = 2.2) -> bytes:
    """Fig. 2, 6, 8, 9: a row per model (label left), a column per image kind; nearest-neighbour
    display so single attacked pixels stay visible. None leaves a cell empty."""
    n_cols = max(len(r[1]) for r in rows)
    fig = Figure(figsize=(tile_inches * n_cols + 0.6, tile_inches * len(rows) + (0.5 if title else 0.2)))
    for r, (label, tiles) in enumerate(rows):
        for c, tile in enumerate(tiles):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if tile is None:
                ax.axis("off")
                continue
            ax.imshow(np.clip(tile.image, 0, 1), interpolation="nearest")
            ax.set_title(tile.title, fontsize=8)
            if tile.box is not None:
                top, left, h, w = tile.box
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor="yellow", linewidth=1.2))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


@as_written
def index_scatter(points: Series, title: str) -> bytes:
    """Fig. 10: SR PSNR of the basic attack versus the robustness index, a point per image,
    a colour per model."""
    fig = Figure(figsize=(7.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, pts) in enumerate(points.items()):
        pts = [(x, y) for x, y in pts if y is not None and math.isfinite(y) and x > 0]
        if pts:
            ax.scatter([x for x, _ in pts], [y for _, y in pts], color=colour(i),
                       marker=MARKERS[i % len(MARKERS)], s=24, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("robustness index (max_i ||grad||_1)", fontsize=9)
    ax.set_ylabel("SR PSNR of the basic attack (dB)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside, not over, the points
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


@as_written
def profile(series: Series, title: str) -> bytes:
    """The partial attack's permeation: MSE of Y outside the mask versus distance (LR pixels)."""
    fig = Figure(figsize=(6.2, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, pts) in enumerate(series.items()):
        pts = [(x, y) for x, y in pts if y is not None and y > 0]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], color=colour(i), marker=MARKERS[i % len(MARKERS)],
                    markersize=3, label=name)
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("distance from the attacked region (LR pixels)", fontsize=9)
    ax.set_ylabel("MSE of Y (0..255)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return png(fig)


@as_written
def loss_curves(panels: Sequence[Panel], title: str) -> bytes:
    """The attack's loss per iteration (evidence of convergence): one panel per model and
    dataset, one line per budget, each the mean over images of loss / final loss."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.1 * rows))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for i, (name, pts) in enumerate(panel.series.items()):
            pts = [(x, y) for x, y in pts if y is not None and math.isfinite(y)]
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], color=colour(i), label=name, linewidth=1.3)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("iteration", fontsize=9)
        ax.set_ylabel(panel.ylabel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png(fig)


__all__ = ["Panel", "SizePoint", "Tile", "curves", "loss_curves", "size_scatter", "heatmap", "image_grid", "index_scatter",
           "profile", "png", "budget_label", "colour"]
