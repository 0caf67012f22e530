"""Time the CLI's start: `sreval --help`, `sreval attack --help`, `sreval attacks` and
`sreval zoo list` against `python -c pass`, each a fresh interpreter, interleaved, median of
--repeat. The goal (issue 24): the help commands within 0.5 s of `python -c pass`.

Also lists what importing the CLI loads (`python -X importtime -c "import sreval.cli"`): the
slowest imports, and whether any heavy layer (torch, onnxruntime, ...) is among them.

    python benchmarks/bench_cli.py                # 7 repeats
    python benchmarks/bench_cli.py --repeat 15 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "onnx2torch", "spandrel", "matplotlib", "cv2", "numpy")
# the installed console script, as users run it (else the module)
SREVAL = [shutil.which("sreval")] if shutil.which("sreval") else [sys.executable, "-m", "sreval.cli"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "sreval --help": [*SREVAL, "--help"],
    "sreval attack --help": [*SREVAL, "attack", "--help"],
    "sreval attacks": [*SREVAL, "attacks"],
}


def once(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def import_profile(top: int) -> tuple[list[tuple[float, str]], list[str]]:
    """(the `top` slowest imports by cumulative time in seconds, the heavy modules loaded)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sreval.cli"], capture_output=True,
                       text=True, check=True)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))
    loaded = {name.split(".")[0] for _, name in rows}
    return sorted(rows, reverse=True)[:top], [h for h in HEAVY if h in loaded]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeat):  # interleaved: a busy machine slows every command alike
        for name, cmd in COMMANDS.items():
            times[name].append(once(cmd))
    base = statistics.median(times["python -c pass"])
    result = {name: {"median_s": statistics.median(t), "over_python_s": statistics.median(t) - base}
              for name, t in times.items()}
    slowest, heavy = import_profile(8)
    if args.json:
        print(json.dumps({"commands": result, "heavy_modules_loaded": heavy,
                          "slowest_imports": [{"s": s, "module": m} for s, m in slowest]}, indent=2))
        return
    print(f"median of {args.repeat} runs each, interleaved")
    for name, r in result.items():
        print(f"  {name:24s} {r['median_s']:6.3f} s   (+{r['over_python_s']:.3f} s over python -c pass)")
    print(f"heavy modules loaded by `import sreval.cli`: {', '.join(heavy) or 'none'}")
    print("slowest imports (cumulative):")
    for s, m in slowest:
        print(f"  {s:6.3f} s  {m}")


if __name__ == "__main__":
    main()
