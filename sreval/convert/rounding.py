"""Round, Floor, Ceil and Cast to an 8- or 16-bit integer type, with straight-through gradients.

torch's rounding has a zero gradient, so a graph that rounds its own output (a deployed model
with uint8 image output: Round, Clip, Cast) would give the attack no gradient at all. Here the
forward pass gives onnxruntime's numbers and the backward pass is the identity (a
straight-through estimate: `sreval.convert.straight_through_ops` names the operators, and the
report says so). A Cast from a float to uint8/int8/uint16/int16 keeps a float tensor holding
the integer values (saturated to the type; exact in float32), so the gradient can flow on;
casts to int32/int64/bool, shape and index arithmetic, stay real casts.

Also here, for the same graphs: `Sqrt` with a finite gradient at 0. A quantised variance (the
contrast of IMDN's attention) is often exactly 0, where sqrt's derivative is infinite and the
input gradient becomes NaN; below SQRT_FLOOR the gradient is taken as 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx import TensorProto
from onnx2torch.node_converters.cast import TENSOR_TYPE_TO_TORCH_TYPE
from onnx2torch.utils.common import OnnxToTorchModule
from torch import Tensor, nn

from sreval.convert.quant import INT_RANGES
from sreval.convert.registry import converter, simple


def straight_through(x: Tensor, value: Tensor) -> Tensor:
    """`value` forward (exactly: x - x.detach() is 0), the identity's gradient backward."""
    return value.detach() + (x - x.detach())


class RoundSTE(nn.Module, OnnxToTorchModule):
    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return straight_through(x, self.fn(x)) if x.is_floating_point() else x


class CastSTE(nn.Module, OnnxToTorchModule):
    def __init__(self, to: int):
        super().__init__()
        self.dtype, self.bounds = TENSOR_TYPE_TO_TORCH_TYPE.get(to), INT_RANGES.get(to)
        if self.dtype is None and self.bounds is None:
            raise NotImplementedError(f"Cast to ONNX type {TensorProto.DataType.Name(to)} is not supported")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.bounds is not None and x.is_floating_point():
            return straight_through(x, torch.clamp(torch.trunc(x), *self.bounds))
        if self.dtype is None:  # uint16 from an integer: torch has no such dtype to cast to
            return x.to(torch.int32)
        return x.to(self.dtype)


SQRT_FLOOR = 1e-12


class SqrtFinite(nn.Module, OnnxToTorchModule):
    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        floored = torch.sqrt(torch.clamp(x, min=SQRT_FLOOR))
        return floored + (torch.sqrt(x) - floored).detach()


converter("Round", (11, 22))(simple(lambda node: RoundSTE(torch.round)))
converter("Floor", (6, 13))(simple(lambda node: RoundSTE(torch.floor)))
converter("Ceil", (6, 13))(simple(lambda node: RoundSTE(torch.ceil)))
converter("Sqrt", (6, 13))(simple(lambda node: SqrtFinite()))
converter("Cast", (6, 9, 13, 19, 21, 23, 24, 25, 28))(simple(lambda node: CastSTE(node.attributes["to"])))

STRAIGHT_THROUGH = ("Round", "Floor", "Ceil", "Cast", "QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                    "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid",
                    "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "DynamicQuantizeMatMul")
