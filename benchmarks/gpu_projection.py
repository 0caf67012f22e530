"""The paper's full sweep, projected from a scaled one: FLOPs counted, time measured.

    python benchmarks/gpu_projection.py --device cuda          # on the GPU (gpu_check.sh)
    python benchmarks/gpu_projection.py --device cpu --steps 2 --side 24 --archs carn_m  # a dry run

The full sweep is the paper's: its 8 models (random weights: speed does not depend on them) x
Set5, Set14 and BSD100 at x4 x 6 budgets x T = 50 I-FGSM steps, one forward and one backward
pass per step. Its cost is counted, not guessed: torch's FlopCounterMode counts one forward +
backward of each native network on an LR crop, per LR pixel, times the LR pixels of the three
datasets (DATASET_LR_PIXELS, counted from shared/assets at x4). The scaled sweep times sreval's
attack (six budgets in one batch, `--steps` steps) on one `--side` crop per model; the achieved
rate (FLOP/s) gives each model's projected time on the whole sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sreval  # noqa: E402
from bench_attack import ALPHAS, sreval_model  # noqa: E402

PAPER = ("edsr", "edsr_baseline", "rcan", "4pp_eusr", "esrgan", "rrdb", "carn", "carn_m")
# LR pixels at x4 (HR cropped to a multiple of 4, then /4 per side), summed over each dataset's
# images: counted from shared/assets/datasets/{Set5,Set14,BSD100}/HR
DATASET_LR_PIXELS = {"Set5": 35_466, "Set14": 201_105, "BSD100": 960_000}


def pass_flops(net: torch.nn.Module, side: int, batch: int, device: torch.device) -> float:
    """FLOPs of one forward + backward (input gradient) of `net` on a batch of side x side."""
    x = torch.rand(batch, 3, side, side, device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        net(x).square().mean().backward()
    return float(counter.get_total_flops())


def timed_attack(model: torch.nn.Module, side: int, steps: int, device: torch.device) -> float:
    x0 = torch.rand(1, 3, side, side, device=device)
    hr = torch.rand(1, 3, 4 * side, 4 * side, device=device)
    attack = sreval.IFGSM(model, eps=ALPHAS, steps=steps)
    attack.run(x0, hr, ids=[0])  # warm-up: kernels chosen, memory pooled
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    attack.run(x0, hr, ids=[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--archs", default=",".join(PAPER))
    ap.add_argument("--side", type=int, default=64, help="LR crop side of the scaled sweep")
    ap.add_argument("--steps", type=int, default=10, help="I-FGSM steps of the scaled sweep")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    lr_pixels = sum(DATASET_LR_PIXELS.values())
    full_passes = len(ALPHAS) * 50  # per image: 6 budgets x T = 50 forward+backward passes
    rows, total_flop, total_s = [], 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            source, native = sreval_model(arch, device, Path(tmp))
            model = source.torch()
            native = native.to(device).eval()
            per_pixel = pass_flops(native, args.side, 1, device) / args.side ** 2
            seconds = timed_attack(model, args.side, args.steps, device)
            done = per_pixel * args.side ** 2 * len(ALPHAS) * args.steps
            rate = done / seconds
            full = per_pixel * lr_pixels * full_passes
            rows.append({"arch": arch, "gflop_per_lr_pixel": per_pixel / 1e9, "scaled_s": seconds,
                         "tflops": rate / 1e12, "full_pflop": full / 1e15, "full_min": full / rate / 60})
            total_flop, total_s = total_flop + full, total_s + full / rate
            print(f"{arch:14} {per_pixel / 1e6:8.2f} MFLOP/LR px  scaled {seconds:7.2f} s  {rate / 1e12:7.2f} TFLOPS  "
                  f"full sweep {full / 1e15:7.2f} PFLOP -> {full / rate / 60:7.1f} min", flush=True)
    print(f"the full paper sweep: {total_flop / 1e15:.1f} PFLOP, projected {total_s / 60:.1f} min on {device} "
          f"({total_flop / total_s / 1e12:.2f} TFLOPS achieved overall)")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows, "full_pflop": total_flop / 1e15,
                                         "projected_min": total_s / 60}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
