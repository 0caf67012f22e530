"""GlobalMaxPool and AveragePool-19+."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter, get_converter


class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    """GlobalMaxPool: max over all spatial axes, kept as size-1 dims."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.amax(input_tensor, dim=tuple(range(2, input_tensor.dim())), keepdim=True)


def _convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxGlobalMaxPool(), onnx_mapping_from_node(node))


def _convert_average_pool_19(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """AveragePool-19 added dilations; torch's avg_pool has none, so only 1 is accepted."""
    dilations = node.attributes.get("dilations")
    if dilations and any(d != 1 for d in dilations):
        raise NotImplementedError("AveragePool with dilations != 1 is not supported")
    return get_converter("AveragePool", 11)(node, graph)


converter("GlobalMaxPool", (1, 22))(_convert_global_max_pool)
converter("AveragePool", (19, 22))(_convert_average_pool_19)
