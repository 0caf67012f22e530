"""`sreval report RUN_DIR`: one self-contained HTML file (figures embedded as data: URIs) and a
Markdown summary (figures as PNG files beside it), from a sweep folder or any single job's
report.json.

The run-level sections (overview, findings, attack evidence, conventions) are here; the paper's
figures and tables are `sreval.sections`, each left out when the run lacks its data. Sections
are discovered from the rows' `attack` values and from the reports' extra keys.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sreval import figures as F
from sreval.errors import DataError
from sreval.files import STDOUT, atomic_write_many
from sreval.findings import findings
from sreval.registry import ATTACKS
from sreval.runview import CellView, RunView, load_run
from sreval.sections import PAPER_SECTIONS, Figure, Section, Table, fmt, int_text, mean_curve



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
                            [[m["name"], f"x{m.get('scale')}", int_text(m.get("params")), int_text(m.get("conv_layers")),
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


def _evidence(run: RunView) -> Section | None:
    """Sanity checks of every attack cell and its loss per iteration (sreval.attacks.evidence)."""
    cells = [c for c in run.cells if c.sections.get("evidence")]
    if not cells:
        return None
    body, panels = [], []
    for c in cells:
        for chk in c.sections["evidence"].get("checks", []):
            body.append([c.model, c.dataset, chk["name"], "ok" if chk["ok"] else "FAILED", chk["detail"]])
        series = {F.budget_label(a): mean_curve([r for r in c.rows if r.get("alpha") == a]) for a in c.alphas}
        series = {k: v for k, v in series.items() if v}
        if series:
            panels.append(F.Panel(f"{c.model} - {c.dataset}", "loss / final loss", series))
    failed = sum(row[3] == "FAILED" for row in body)
    text = ("Evidence that the attack was strong and converged: checks run with every basic attack "
            "(gradient finite and non-zero; loss rose; best of restarts; damage grows with the budget; a "
            "near-zero budget changes almost nothing; half the steps is not stronger; a gradient-free attack is not "
            "stronger; the loss follows its gradient; an unbounded budget moves the output as far as an unrelated "
            "image; the output is not random; `strongest` converged and its random starts agree). "
            + (f"{failed} check(s) FAILED: treat those numbers as an upper bound on robustness only."
               if failed else "Every check passed."))
    figures = [Figure(F.loss_curves(panels[:12], "loss per iteration"), "loss per iteration", "evidence")] if panels else []
    tables = [Table(["model", "dataset", "check", "verdict", "detail"], body)]
    conv = _convergence(cells)
    if conv:
        text += (" Convergence of `strongest` per budget: images whose last doubling of the iterations lowered SR "
                 "PSNR by at most the threshold; a row that did not converge is an upper bound on robustness.")
        tables.append(Table(["model", "dataset", "budget", "converged", "passes per image", "largest last gain (dB)",
                             "largest spread over starts (dB)"], conv))
    return Section("evidence", "Attack evidence (sanity checks)", text, figures, tables)


def _convergence(cells: Sequence[CellView]) -> list[list[str]]:
    """Per cell and budget of a converged `strongest`: converged/n, mean passes, worst gain and spread."""
    out = []
    for c in cells:
        for a in c.alphas:
            rows = [r for r in c.rows if r.get("alpha") == a and "converged" in r]
            if rows:
                gains = [r["convergence"]["gain_last_doubling_db"] or 0.0 for r in rows]
                flag = "" if all(r["converged"] for r in rows) else " NOT CONVERGED"
                out.append([c.model, c.dataset, F.budget_label(a), f"{sum(r['converged'] for r in rows)}/{len(rows)}{flag}",
                            f"{sum(r['convergence']['passes'] for r in rows) / len(rows):.0f}", f"{max(gains):.2f}",
                            f"{max(r['convergence']['restart_spread_db'] for r in rows):.2f}"])
    return out


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


SECTIONS: list[Callable[[RunView], Section | list[Section] | None]] = [
    _overview, _findings, *PAPER_SECTIONS, _evidence, _conventions,
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


__all__ = ["build_sections", "render_html", "render_markdown", "render_report", "Rendered", "SECTIONS"]
