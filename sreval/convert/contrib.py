"""onnxruntime's contrib operators, as its graph optimiser writes them into a saved model.

At the EXTENDED level (and so at ALL) onnxruntime's CPU optimiser fuses: Conv + activation
(+ Add) into `FusedConv`; Gemm + activation into `FusedGemm`; MatMul with a scale or
transposes into `FusedMatMul`; the erf / tanh / sigmoid forms of GELU into `Gelu`, `FastGelu`,
`QuickGelu` and with a bias add `BiasGelu`; layer norms into `LayerNormalization` (in the
ONNX domain, for opsets before 17 too), `SimplifiedLayerNormalization` (RMS norm) and, with
the residual add, `SkipLayerNormalization` / `SkipSimplifiedLayerNormalization`; dynamic int8
MatMuls into `DynamicQuantizeMatMul` and `MatMulIntegerToFloat` (see `sreval.convert.quant`
for the int8 arithmetic). All are in the com.microsoft domain
except where said. Semantics from onnxruntime's contrib operator documentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule
from torch import Tensor, nn

from sreval.convert.quant import DynamicQuantizeLinear, ConvArgs, less_zero, along
from sreval.convert.registry import MS_DOMAIN, converter, simple


def activation(name: str, params: list[float]):  # noqa: ANN201
    """The activation a fused node names, with its parameters (onnxruntime's order)."""
    if name in ("", "Identity"):
        return lambda x: x
    if name == "Relu":
        return F.relu
    if name == "Sigmoid":
        return torch.sigmoid
    if name == "Tanh":
        return torch.tanh
    if name == "LeakyRelu":
        alpha = params[0] if params else 0.01
        return lambda x: F.leaky_relu(x, alpha)
    if name == "Clip":
        low, high = (params + [-math.inf, math.inf][len(params):])[:2]
        return lambda x: torch.clamp(x, low, high)
    if name == "HardSigmoid":
        alpha, beta = (params + [0.2, 0.5][len(params):])[:2]
        return lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)
    raise NotImplementedError(f"fused activation {name!r} is not supported")


class FusedConv(nn.Module, OnnxToTorchModule):
    """activation(conv(X, W, B) + Z)."""

    def __init__(self, node: OnnxNode):
        super().__init__()
        a = node.attributes
        self.conv = ConvArgs(node)
        self.act = activation(a.get("activation", ""), list(a.get("activation_params", [])))

    def forward(self, x: Tensor, w: Tensor, b: Tensor | None = None, z: Tensor | None = None) -> Tensor:  # noqa: D102
        y = self.conv(x, w)
        if b is not None:
            y = y + along(b, 1, y.dim())
        if z is not None:
            y = y + z
        return self.act(y)


class FusedGemm(nn.Module, OnnxToTorchModule):
    """activation(alpha * A' B' + beta * C)."""

    def __init__(self, node: OnnxNode):
        super().__init__()
        a = node.attributes
        self.alpha, self.beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        self.trans_a, self.trans_b = bool(a.get("transA", 0)), bool(a.get("transB", 0))
        params = [a[k] for k in ("activation_alpha", "activation_beta", "activation_gamma") if k in a]
        self.act = activation(a.get("activation", ""), params)

    def forward(self, a: Tensor, b: Tensor, c: Tensor | None = None) -> Tensor:  # noqa: D102
        y = self.alpha * ((a.t() if self.trans_a else a) @ (b.t() if self.trans_b else b))
        return self.act(y + self.beta * c if c is not None else y)


class FusedMatMul(nn.Module, OnnxToTorchModule):
    """alpha * op(A) @ op(B), op a transpose of the last two axes (transA / transB) or, with
    transBatch, of the batch axes moved to the end."""

    def __init__(self, node: OnnxNode):
        super().__init__()
        a = node.attributes
        self.alpha = a.get("alpha", 1.0)
        self.flags = (bool(a.get("transA", 0)), bool(a.get("transBatchA", 0)),
                      bool(a.get("transB", 0)), bool(a.get("transBatchB", 0)))

    @staticmethod
    def _op(x: Tensor, trans: bool, batch: bool) -> Tensor:
        if batch and x.dim() > 2:  # [B..., M, K] -> [M, B..., K], as onnxruntime's transBatch
            x = x.permute(x.dim() - 2, *range(x.dim() - 2), x.dim() - 1)
        return x.transpose(-1, -2) if trans else x

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # noqa: D102
        ta, ba, tb, bb = self.flags
        return self.alpha * (self._op(a, ta, ba) @ self._op(b, tb, bb))


class Gelu(nn.Module, OnnxToTorchModule):
    """GELU of (X + bias): exact (erf), tanh-approximated (FastGelu) or x * sigmoid(a x) (QuickGelu)."""

    def __init__(self, kind: str, alpha: float = 1.702):
        super().__init__()
        self.kind, self.alpha = kind, alpha

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: D102
        if bias is not None:
            x = x + bias
        if self.kind == "quick":
            return x * torch.sigmoid(self.alpha * x)
        return F.gelu(x, approximate="tanh" if self.kind == "tanh" else "none")


class LayerNorm(nn.Module, OnnxToTorchModule):
    """Layer or RMS normalisation over the axes from `axis` on, of input (+ skip + bias); the
    outputs onnxruntime gives: Y, mean, inverse std (and the sum, for the Skip forms)."""

    def __init__(self, axis: int, epsilon: float, rms: bool, skip: bool, outputs: int):
        super().__init__()
        self.axis, self.epsilon, self.rms, self.skip, self.outputs = axis, epsilon, rms, skip, outputs

    def forward(self, x: Tensor, *rest: Tensor | None) -> Tensor | tuple[Tensor, ...]:  # noqa: D102
        if self.skip:  # input, skip, gamma, [beta,] [bias]: RMS forms have no beta
            skip, gamma, *more = rest
            beta, bias = (None, *more) if self.rms else ((*more, None, None)[:2])
            x = x + skip + (bias if bias is not None else 0.0)
        else:
            gamma, *more = rest
            beta = more[0] if more and not self.rms else None
        total = x
        dims = tuple(range(self.axis % x.dim(), x.dim()))
        xf = x.float()
        mean = torch.zeros_like(xf.mean(dims, keepdim=True)) if self.rms else xf.mean(dims, keepdim=True)
        centred = xf - mean
        inv_std = torch.rsqrt(centred.pow(2).mean(dims, keepdim=True) + self.epsilon)
        y = (centred * inv_std).to(x.dtype) * gamma
        if beta is not None:
            y = y + beta
        outs = (y, mean, inv_std, total) if self.skip else (y, mean, inv_std)
        return outs[0] if self.outputs == 1 else outs[:self.outputs]


class DynamicQuantizeMatMul(nn.Module, OnnxToTorchModule):
    """A (float) quantised to uint8 with its own range, times B (int8/uint8 with scale and zero
    point), in float: (A_q - a_zp) @ (B - b_zp) * a_scale * b_scale + bias."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = DynamicQuantizeLinear()

    def forward(self, a: Tensor, b: Tensor, b_scale: Tensor, b_zero: Tensor | None = None,  # noqa: D102
                bias: Tensor | None = None) -> Tensor:
        q, a_scale, a_zero = self.quant(a)
        y = torch.matmul(q - a_zero, less_zero(b, b_zero, -1)) * (a_scale * b_scale)
        return y + bias if bias is not None else y


class MatMulIntegerToFloat(nn.Module, OnnxToTorchModule):
    def forward(self, a: Tensor, b: Tensor, a_scale: Tensor, b_scale: Tensor,  # noqa: D102
                a_zero: Tensor | None = None, b_zero: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        y = torch.matmul(less_zero(a, a_zero, -2), less_zero(b, b_zero, -1)) * (a_scale * b_scale)
        return y + bias if bias is not None else y


def _norm(rms: bool, skip: bool, default_axis: int = -1):  # noqa: ANN202
    def make(node: OnnxNode) -> LayerNorm:
        a = node.attributes
        if a.get("stash_type", 1) != 1:
            raise NotImplementedError("a layer norm with stash_type other than float is not supported")
        return LayerNorm(a.get("axis", default_axis), a.get("epsilon", 1e-5), rms, skip, len(node.output_values))
    return simple(make)


ALL_OPSETS = tuple(range(1, 26))  # onnxruntime's contrib operators in the ONNX domain are not versioned with it
ONNX_DOMAIN = frozenset({("SimplifiedLayerNormalization", v) for v in ALL_OPSETS}
                        | {("LayerNormalization", v) for v in range(1, 17)})  # contrib ops without an ONNX schema

converter("FusedConv", (1,), MS_DOMAIN)(simple(FusedConv))
converter("FusedGemm", (1,), MS_DOMAIN)(simple(FusedGemm))
converter("FusedMatMul", (1,), MS_DOMAIN)(simple(FusedMatMul))
converter("Gelu", (1,), MS_DOMAIN)(simple(lambda node: Gelu("erf")))
converter("BiasGelu", (1,), MS_DOMAIN)(simple(lambda node: Gelu("erf")))
converter("FastGelu", (1,), MS_DOMAIN)(simple(lambda node: Gelu("tanh")))
converter("QuickGelu", (1,), MS_DOMAIN)(simple(lambda node: Gelu("quick", node.attributes.get("alpha", 1.702))))
converter("SkipLayerNormalization", (1,), MS_DOMAIN)(_norm(rms=False, skip=True))
converter("SkipSimplifiedLayerNormalization", (1,), MS_DOMAIN)(_norm(rms=True, skip=True))
converter("SimplifiedLayerNormalization", ALL_OPSETS)(_norm(rms=True, skip=False))
converter("LayerNormalization", tuple(range(1, 17)))(_norm(rms=False, skip=False))  # LN-17's meaning, earlier
converter("DynamicQuantizeMatMul", (1,), MS_DOMAIN)(simple(lambda node: DynamicQuantizeMatMul()))
converter("MatMulIntegerToFloat", (1,), MS_DOMAIN)(simple(lambda node: MatMulIntegerToFloat()))
