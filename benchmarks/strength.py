"""README's "Converged attack" table: `--method strongest` at an effort against the paper's
I-FGSM and against an independent attack, per model and budget.

Protocol (issue 23): Set5, 32x32 LR centre crops (the sweep's `--crop 32`: the LR crop and the
HR pixels above it), budgets 2/255 and 8/255, SR PSNR of Y against the clean SR (lower = more
damage), mean over the five images. The `independent` column is the reference the issue
measured with its own attack in the same l_inf ball and the same 8-bit delivery (APGD, 300
iterations, restarts, Y loss; itself cut short, so an upper bound on the worst case); sreval
should reach it within 0.3 dB or go lower. Results go to a JSON file, one entry per (model,
effort), so an interrupted run resumes; the table is printed from it.

    python benchmarks/strength.py --out benchmarks/results/strength.json   # then --readme
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.readme_table import write_table  # noqa: E402
from sreval.commands import attack  # noqa: E402
from sreval.config import LoopOptions  # noqa: E402
from sreval.data import load_dataset  # noqa: E402
from sreval.sweeps import write_crops  # noqa: E402

BUDGETS = ("2/255", "8/255")
CROP = 32  # LR pixels
# Issue 23's independent attack (APGD, 300 iterations, restarts, Y loss) on the same crops.
INDEPENDENT = {
    "carn-m": {"2/255": 29.66, "8/255": 18.58},
    "imdn": {"2/255": 23.20, "8/255": 14.21},
    "realesr-animevideov3-x4": {"2/255": 34.94, "8/255": 21.08},
}
WITHIN_DB = 0.3


def measure(model: str, data: Path, effort: str, work: Path) -> dict:
    """Per budget: the ensemble's and each member's mean SR PSNR, passes and convergence."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = attack(model, data, alpha=",".join(BUDGETS), method="strongest", sanity=False, out=work,
                     device="cpu", loop=LoopOptions("strongest", effort=effort))
    out: dict = {"seconds": time.perf_counter() - start, "images": len({r["image"] for r in rep["results"]})}
    for budget in BUDGETS:
        rows = [r for r in rep["results"] if f"{round(r['alpha'] * 255)}/255" == budget]
        members = rows[0]["psnr_sr_by_method"]
        out[budget] = {
            "strongest": _mean([r["psnr_sr"] for r in rows]),
            **{m: _mean([r["psnr_sr_by_method"][m] for r in rows]) for m in members},
            "passes": _mean([r["convergence"]["passes"] for r in rows]),
            "converged": sum(r["converged"] for r in rows),
            "gain_last_doubling_db": max(r["convergence"]["gain_last_doubling_db"] or 0.0 for r in rows),
            "restart_spread_db": max(r["convergence"]["restart_spread_db"] for r in rows),
        }
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def set5_crops(root: Path, scale: int) -> Path:
    """Set5's 32x32 LR centre crops with their HR, as `sreval sweep --crop 32` writes them."""
    write_crops(load_dataset("Set5", scale), scale, CROP, root)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(INDEPENDENT))
    ap.add_argument("--effort", default="standard")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "strength.json")
    ap.add_argument("--readme", action="store_true", help="only write the table from --out into README.md")
    args = ap.parse_args()
    done = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.readme:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            data = set5_crops(Path(tmp) / "set5", 4)
            for model in args.models.split(","):
                key = f"{model}|{args.effort}"
                if key not in done:
                    done[key] = measure(model, data, args.effort, Path(tmp) / key.replace("|", "-"))
                    args.out.write_text(json.dumps(done, indent=1))
                    print(key, json.dumps(done[key]), flush=True)
    text = table(done)
    if args.readme:
        write_table("converged-table", text)
    print(text)


def table(done: dict) -> str:
    lines = ["| model | budget | effort | I-FGSM (paper, T=50) | strongest | independent | strongest - independent "
             "| converged | passes per image and budget | minutes (one CPU thread) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, res in done.items():
        model, effort = key.split("|")
        for budget in BUDGETS:
            r = res[budget]
            ref = INDEPENDENT.get(model, {}).get(budget)
            gap = "-" if ref is None else f"{r['strongest'] - ref:+.2f}"
            lines.append(f"| {model} | {budget} | {effort} | {r['ifgsm']:.2f} | {r['strongest']:.2f} | "
                         f"{'-' if ref is None else f'{ref:.2f}'} | {gap} | {r['converged']}/{res['images']} | "
                         f"{r['passes']:.0f} | {res['seconds'] / 60:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
