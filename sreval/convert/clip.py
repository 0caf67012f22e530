"""Clip-11+ with min / max given as inputs that are constant, computed, or left empty."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from sreval.convert.registry import converter


class OnnxClipExact(nn.Module, OnnxToTorchModule):
    """Clip with the bounds the node has: `has_min` / `has_max` say which of the optional
    inputs are there (an empty name means unbounded on that side). Written with `where`, not
    torch.clamp: clamp with tensor bounds passes half the gradient at a value equal to a bound,
    and a rounded output sits exactly on its bounds wherever it saturates."""

    def __init__(self, has_min: bool, has_max: bool):
        super().__init__()
        self.has_min, self.has_max = has_min, has_max

    def forward(self, x: torch.Tensor, *bounds: torch.Tensor) -> torch.Tensor:  # noqa: D102
        it = iter(bounds)
        low = next(it) if self.has_min else None
        high = next(it) if self.has_max else None
        if low is not None:
            x = torch.where(x < low, low.to(x.dtype), x)
        if high is not None:
            x = torch.where(x > high, high.to(x.dtype), x)
        return x


def _convert_clip(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    names = list(node.input_values) + ["", ""]
    has_min, has_max = bool(names[1]), bool(names[2])
    inputs = (names[0],) + tuple(n for n in names[1:3] if n)
    return OperationConverterResult(OnnxClipExact(has_min, has_max), OnnxMapping(inputs=inputs, outputs=node.output_values))


converter("Clip", (11, 12, 13))(_convert_clip)
