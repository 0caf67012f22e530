"""README's "Deployed models" table: what deployment does to robustness.

For each real-weight model and each deployment variant of tests/deployed.py that computes other
numbers than float32 (int8 three ways, fp16, uint8 I/O with rounding; the onnxruntime-optimised,
simplified, normalised and rank-3 forms compute float32's numbers, which tests/test_deployed.py
checks), on Set5's 32x32 LR centre crops (whole images are hours of 2 CPU cores for every
variant): clean SR PSNR and SR PSNR under the basic attack (I-FGSM, 50 steps) and
`--method strongest`, at 2/255 and 8/255. Each file is attacked as sreval attacks any foreign
file: no override, conventions detected. Results go to a JSON file, one entry per (model,
variant, method), so an interrupted run resumes; the table is printed from it.

    python benchmarks/deployed_table.py --out benchmarks/results/deployed.json  # then --readme
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.readme_table import write_table  # noqa: E402
from sreval.commands import attack, evaluate  # noqa: E402
from sreval.data import crop_center, load_dataset  # noqa: E402
from sreval.io import write_image  # noqa: E402
from tests.deployed import VARIANTS, base  # noqa: E402

BUDGETS = "2/255,8/255"
METHODS = ("ifgsm", "strongest")
DISTINCT = ("float", "qdq-tensor-s8", "qdq-channel-u8", "qoperator", "dynamic", "fp16", "uint8-nhwc")
CROP = 32  # LR pixels


def measure(path: Path, data: Path, method: str | None, work: Path) -> dict[str, float]:
    """Mean SR PSNR over the images: clean (method None) or per budget."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method is None:
            rep = evaluate(path, data, out=work / "eval", device="cpu")
            return {"clean": rep["summary"][0]["psnr_sr"], "runtime": rep["config"]["runtime"]}
        rep = attack(path, data, alpha=BUDGETS, method=method, sanity=False, out=work / method, device="cpu")
    return {f"{round(row['alpha'] * 255)}/255": row["psnr_sr"] for row in rep["summary"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="carn-m,imdn")
    ap.add_argument("--variants", default=",".join(DISTINCT))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "deployed.json")
    ap.add_argument("--readme", action="store_true", help="only write the table from --out into README.md")
    args = ap.parse_args()
    if args.readme:
        write_table("deployed-table", table(json.loads(args.out.read_text())))
        return
    done = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        crops, data = _crops(), _set5_crops(folder / "set5", 4)
        files = {}
        for name in args.models.split(","):
            float_path = base(name, folder)
            for variant in args.variants.split(","):
                files[name, variant] = VARIANTS[variant](float_path, folder / f"{name}-{variant}.onnx", crops)
        # the cheap columns of every row first, then the strongest attack row by row
        for method in (None, *METHODS):
            for (name, variant), path in files.items():
                key = f"{name}|{variant}|{method or 'clean'}"
                if key in done:
                    continue
                done[key] = measure(path, data, method, folder / key.replace("|", "-"))
                args.out.write_text(json.dumps(done, indent=1))
                print(key, done[key], flush=True)
    print(table(done))


def _crops() -> list:
    """Calibration data for static quantisation: LR crops of the embedded photos (not Set5)."""
    return [s.lr[:48, :48].transpose(2, 0, 1)[None].copy() for s in load_dataset("default", 4)]


def _set5_crops(root: Path, scale: int) -> Path:
    """Set5's central HR crops whose LR (made by the loader, MATLAB bicubic) is CROP square."""
    (root / "HR").mkdir(parents=True)
    for s in load_dataset("Set5", scale):
        write_image(root / "HR" / f"{s.name}.png", crop_center(s.hr, CROP * scale, CROP * scale))
    return root


def table(done: dict) -> str:
    lines = ["| model | form | clean | I-FGSM 2/255 | I-FGSM 8/255 | strongest 2/255 | strongest 8/255 |",
             "|---|---|---|---|---|---|---|"]
    models = dict.fromkeys(k.split("|")[0] for k in done)
    for name in models:
        for variant in DISTINCT:
            cells = [done.get(f"{name}|{variant}|clean", {}).get("clean")]
            for method in METHODS:
                row = done.get(f"{name}|{variant}|{method}", {})
                cells += [row.get("2/255"), row.get("8/255")]
            if any(c is not None for c in cells):
                lines.append(f"| {name} | {variant} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
