"""Reshape-14+, allowzero included."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


class OnnxReshapeExact(nn.Module, OnnxToTorchModule):
    """Reshape-14+: with allowzero=1 (torch's dynamo exporter sets it) a 0 means size 0."""

    def __init__(self, allowzero: bool):
        super().__init__()
        self.allowzero = allowzero

    def forward(self, input_tensor: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dims = [int(d) for d in shape.tolist()]
        if not self.allowzero:  # 0 copies the input's size at that position
            dims = [input_tensor.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return torch.reshape(input_tensor, dims)


def _convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = OnnxReshapeExact(bool(node.attributes.get("allowzero", 0)))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


converter("Reshape", (14, 19, 21, 23, 24, 25))(_convert_reshape)
