"""The one parity check: does a model computed one way (the candidate) give the numbers of the
same model computed another way (the reference)?

The loader compares the onnx2torch conversion with onnxruntime (`SRModel.check_parity`); the
exporters compare the written ONNX file with the PyTorch module they exported. Both feed the
same inputs, crops of a real photo (`sreval.data.probe_batch`) at odd sizes, one of them a
batch of two, and both use the same tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import Tensor

from sreval.data import probe_batch
from sreval.errors import ModelError
from sreval.io import rgb_to_ycbcr
from sreval.runtime import open_session, run_session

# Odd sizes catch padding and pixel-shuffle order slips; >= 15, as RFDN's ESA pools need.
SIZES = ((1, 19, 23), (2, 17, 15))
TOL = 1e-4  # of the output range, which the adapter maps to [0, 1]
# float16 keeps 11 significant bits: one unit in the last place at 1.0 is 2^-10, and every layer
# rounds its output again; measured against onnxruntime on the deployment registry
# (tests/deployed.py): max 1.2 grey levels (SPAN), RMS under 0.1. The criterion is 4 grey levels
# (2^-6) anywhere and a quarter grey level in RMS; a wrong conversion is off by whole grey
# levels everywhere. bfloat16 keeps 8 bits: 8 times the float16 bounds.
# An int8 graph rounds every activation to its quantisation step; float summation order alone
# flips some roundings, and a flip moves everything downstream by a step, more in deeper
# networks (same registry: CARN-M QDQ max 3 output steps, RMS 0.4; IMDN up to max 5, RMS 1.1).
# The criterion is two steps (of 1/255 of the output range) in RMS, with single pixels allowed
# 16; a wrong scale, zero point or axis is off by many steps everywhere. A float graph that
# rounds its output (uint8 image output) flips a rounding here and there: one step anywhere,
# a quarter step in RMS.
STEP_INT8 = 1.0 / 255.0
TOL_FP16 = 2.0**-6
TOL_BF16 = 2.0**-3
TOLS = {"fp32": (TOL, math.inf), "fp16": (TOL_FP16, STEP_INT8 / 4), "bf16": (TOL_BF16, 2 * STEP_INT8),
        "int8": (16 * STEP_INT8, 2 * STEP_INT8),
        "rounded": (STEP_INT8 + 2.0**-8, STEP_INT8 / 4)}  # precision -> (max, RMS) tolerance, in output ranges

Run = Callable[[Tensor], "Tensor | Sequence[Tensor]"]


@dataclass(frozen=True)
class Parity:
    max_diff: float
    tol: float
    grad_l1: float
    shapes: list[list[int]] = field(default_factory=list)
    rms_diff: float = 0.0
    rms_tol: float = math.inf
    precision: str = "fp32"  # the graph's compute precision, which sets the tolerances (TOLS)

    @property
    def close(self) -> bool:
        return self.max_diff <= self.tol and self.rms_diff <= self.rms_tol

    @property
    def ok(self) -> bool:
        return self.close and math.isfinite(self.grad_l1) and self.grad_l1 > 0

    def describe(self) -> str:
        """'max |d| = ... (tol ...)' and, where RMS is bounded too, its part."""
        text = f"max |torch - onnxruntime| = {self.max_diff:.3g} (tol {self.tol:g})"
        if math.isfinite(self.rms_tol):
            text += f", RMS {self.rms_diff:.3g} (tol {self.rms_tol:.3g})"
        return f"{text}, {self.precision} graph"


def grown(sizes: Sequence[tuple[int, int, int]], min_side: int) -> list[tuple[int, int, int]]:
    """The sizes with each side grown by `min_side` where the model needs larger inputs."""
    grow = 0 if min_side <= min(min(h, w) for _, h, w in sizes) else min_side
    return [(n, h + grow, w + grow) for n, h, w in sizes]


def probe_input(n: int, h: int, w: int, channels: int = 3) -> Tensor:
    """The parity input of one size: photo crops (their MATLAB Y for a one-channel model)."""
    x = probe_batch(n, h, w, seed=h * w)
    return rgb_to_ycbcr(x)[:, :1] if channels == 1 else x


def outputs(y: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return list(y) if isinstance(y, (tuple, list)) else [y]


def measure(reference: Run, candidate: Run, sizes: Sequence[tuple[int, int, int]], *, tol: float | None = None,
            precision: str = "fp32", channels: int = 3, gradient: bool = True, name: str = "model") -> Parity:
    """Max and RMS |candidate - reference| over every output and size, and (with `gradient`)
    the L1 norm of the candidate's input gradient of sum(y^2), which an attack needs to be
    non-zero. The tolerances are the precision's (TOLS; `tol` replaces the max one). Output
    shapes that differ are a ModelError naming both."""
    worst, grad = 0.0, 0.0 if gradient else math.inf
    squares, count = 0.0, 0
    for n, h, w in sizes:
        x = probe_input(n, h, w, channels)
        with torch.no_grad():
            refs = [r.detach().float().cpu() for r in outputs(reference(x))]
        xt = x.clone().requires_grad_(gradient)
        with torch.set_grad_enabled(gradient):
            got = outputs(candidate(xt))
        if len(got) != len(refs):
            raise ModelError(f"{name}: {len(got)} outputs, the reference gives {len(refs)}")
        for ref, y in zip(refs, got):
            if tuple(y.shape) != tuple(ref.shape):
                raise ModelError(f"{name}: output shape {tuple(y.shape)}, the reference gives {tuple(ref.shape)}")
            if not torch.isfinite(y).all():
                raise ModelError(f"{name}: output contains NaN or Inf")
            diff = y.detach().float().cpu() - ref
            worst = max(worst, diff.abs().max().item())
            squares, count = squares + diff.double().square().sum().item(), count + diff.numel()
        if gradient:
            (gx,) = torch.autograd.grad(got[0].square().sum(), xt)
            grad += gx.abs().sum().item()
    max_tol, rms_tol = TOLS[precision]
    return Parity(worst, max_tol if tol is None else tol, grad, [list(s) for s in sizes],
                  math.sqrt(squares / max(count, 1)), rms_tol, precision)


def check_export(net: Run, proto: onnx.ModelProto, sizes: Sequence[tuple[int, int, int]], *, channels: int = 3,
                 name: str = "model") -> float:
    """An exported graph against the module it came from: max |onnxruntime - module| over
    every output and size (`measure`, no gradient); a ModelError naming `name` above `TOL`."""
    session = open_session(proto, name, torch.device("cpu"))
    feed, fetch = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]

    def onnxruntime(x: Tensor) -> list[Tensor]:
        return [torch.from_numpy(np.asarray(y)) for y in run_session(session, fetch, {feed: x.detach().numpy()})]

    result = measure(net, onnxruntime, sizes, tol=TOL, channels=channels, gradient=False, name=name)
    if not result.max_diff <= result.tol:
        raise ModelError(f"{name}: onnxruntime differs from the PyTorch module by {result.max_diff:.3g}")
    return result.max_diff


__all__ = ["Parity", "SIZES", "TOL", "TOL_FP16", "TOL_BF16", "TOLS", "measure", "check_export", "grown", "probe_input", "outputs"]
