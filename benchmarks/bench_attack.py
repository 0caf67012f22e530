"""Time sreval's basic attack against native PyTorch I-FGSM loops, in one process.

All attack the same network. The floor is the best native loop: the native PyTorch module,
frozen, channels_last, every budget in one batch, nothing else in the loop. The textbook loop
attacks the native module one budget at a time. sreval attacks the ONNX export of that module,
converted by onnx2torch, through its adapter and its shared loop (which also records the loss
per step and the gradient health for the report's evidence). The ratio sreval / floor is what
counts: on CPU it must stay <= 1.05. sreval and the floor run interleaved (--repeat times, the
best of each kept) so that a busy machine slows both alike.

The robustness index (N_s random perturbations, gradient L1 norm each) is timed the same way,
against a loop that takes one perturbation at a time.

    python benchmarks/bench_attack.py                      # EDSR-baseline, 64x64 and 128x128, T=50
    python benchmarks/bench_attack.py --arch edsr --sizes 120x80 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ALPHAS = [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]


def hand_written_ifgsm(model: nn.Module, x0: Tensor, hr: Tensor, eps: float, steps: int) -> Tensor:
    """The textbook loop (paper eq. 2-3), one budget, reference = HR."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = (model(x) - hr).square().mean()
        (g,) = torch.autograd.grad(loss, x)
        x = torch.min(torch.max((x.detach() + eps / steps * g.sign()).clamp(0, 1), x0 - eps), x0 + eps)
    return x.detach()


def best_native_ifgsm(model: nn.Module, x0: Tensor, hr: Tensor, alphas: list[float], steps: int) -> Tensor:
    """The physical floor on this machine: the native module with frozen parameters in
    channels_last, every budget in one batch (per-sample eps), nothing else in the loop."""
    k = len(alphas)
    x0 = x0.repeat(k, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    hr = hr.repeat(k, 1, 1, 1)
    eps = torch.tensor(alphas, dtype=x0.dtype, device=x0.device).reshape(k, 1, 1, 1)
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = (model(x) - hr).square().flatten(1).mean(1).sum()
        (g,) = torch.autograd.grad(loss, x)
        x = torch.min(torch.max((x.detach() + eps / steps * g.sign()).clamp(0, 1), x0 - eps), x0 + eps)
    return x.detach()


def hand_written_index(model: nn.Module, x0: Tensor, ref: Tensor, samples: int, a: float) -> float:
    best = 0.0
    for _ in range(samples):
        x = (x0 + (torch.rand_like(x0) * 2 - 1) * a).requires_grad_(True)
        (g,) = torch.autograd.grad((model(x) - ref).norm(), x)
        best = max(best, g.abs().sum().item())
    return best


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def native_model(arch: str, device: torch.device) -> nn.Module:
    from sreval import exporters

    net = exporters.ARCHS[arch].build(4).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def sreval_model(arch: str, device: torch.device, tmp: Path) -> nn.Module:
    from sreval import exporters
    from sreval.exporters.common import export_onnx
    from sreval.zoo import open_model as load_model

    spec = exporters.ARCHS[arch]
    net = spec.build(4).eval()
    path = export_onnx(net, spec, tmp / f"{arch}.onnx", scale=4, metadata={})
    return load_model(path, device=str(device)), net


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="edsr_baseline")
    ap.add_argument("--sizes", default="64x64,128x128", help="LR sizes HxW, comma separated")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--index-samples", type=int, default=64, help="robustness-index perturbations timed")
    ap.add_argument("--index-batch", type=int, default=None, help="perturbations per sreval batch (default: auto)")
    ap.add_argument("--only", choices=("attack", "index", "both"), default="both")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--skip-textbook", action="store_true", help="time only sreval and the best native loop")
    args = ap.parse_args(argv)

    from sreval.analysis import IndexConfig, gradient_norms
    from sreval.attacks.basic import attack_image
    from sreval.config import BasicConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sr_model, native = sreval_model(args.arch, device, Path(tmp))
        native = native.to(device)
        for p in native.parameters():
            p.requires_grad_(False)
        native_cl = copy.deepcopy(native).to(memory_format=torch.channels_last)
        adapter = sr_model.torch()
        cfg = BasicConfig(alphas=tuple(ALPHAS), steps=args.steps, reference="hr", quantize=False)
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            x0 = torch.rand(1, 3, h, w, device=device)
            hr = torch.rand(1, 3, 4 * h, 4 * w, device=device)
            base = mine = best = float("nan")
            if args.only != "index":
                if not args.skip_textbook:
                    base = timed(lambda: [hand_written_ifgsm(native, x0, hr, a, args.steps) for a in ALPHAS],
                                 device, args.repeat)
                # sreval and the floor interleaved, so that a busy machine slows both alike
                mine = best = float("inf")
                for _ in range(args.repeat):
                    best = min(best, timed(lambda: best_native_ifgsm(native_cl, x0, hr, ALPHAS, args.steps), device, 1))
                    mine = min(mine, timed(lambda: attack_image(adapter, x0, hr, cfg, "hr"), device, 1))
            with torch.no_grad():
                ref = native(x0)
            n = args.index_samples
            base_i = mine_i = float("nan")
            if args.only != "attack":
                base_i = timed(lambda: hand_written_index(native, x0, ref, n, 1 / 255), device, args.repeat)
                icfg = IndexConfig(alpha=1 / 255, samples=n, batch=args.index_batch)
                mine_i = timed(lambda: gradient_norms(adapter, x0, icfg).max(), device, args.repeat)
            row = {"arch": args.arch, "device": str(device), "size": size, "steps": args.steps,
                   "budgets": len(ALPHAS), "baseline_s": base, "sreval_s": mine, "ratio": mine / base,
                   "floor_s": best, "ratio_to_floor": mine / best,
                   "index_samples": n, "index_baseline_s": base_i, "index_sreval_s": mine_i,
                   "index_ratio": mine_i / base_i, "threads": torch.get_num_threads()}
            results.append(row)
            print(f"{args.arch} {size} on {device}: attack {mine:.2f} s vs best native loop {best:.2f} s "
                  f"(ratio {mine / best:.3f}) vs textbook loop {base:.2f} s "
                  f"(ratio {mine / base:.3f}); index[{n}] {mine_i:.2f} s vs {base_i:.2f} s "
                  f"(ratio {mine_i / base_i:.3f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
