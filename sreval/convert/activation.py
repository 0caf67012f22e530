"""PRelu with ONNX broadcasting, Gelu-20, Mish."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


class OnnxPReluExact(nn.Module, OnnxToTorchModule):
    """PRelu with ONNX broadcasting (a slope of shape [K] applies to the LAST axis)."""

    def forward(self, input_tensor: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rank = input_tensor.dim()
        per_channel = rank >= 2 and slope.dim() == rank - 1 and slope.shape[0] == input_tensor.shape[1]
        if slope.numel() == 1 or (per_channel and all(s == 1 for s in slope.shape[1:])):
            return F.prelu(input_tensor, slope.reshape(-1))  # fast, and the common case
        return torch.where(input_tensor >= 0, input_tensor, input_tensor * slope)


def _convert_prelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxPReluExact(), onnx_mapping_from_node(node))




def _convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    approximate = node.attributes.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f'Gelu approximate="{approximate}" is not supported')
    return OperationConverterResult(nn.GELU(approximate=approximate), onnx_mapping_from_node(node))


def _convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(nn.Mish(), onnx_mapping_from_node(node))


converter("PRelu", (7, 9, 16))(_convert_prelu)
converter("Gelu", (20,))(_convert_gelu)
converter("Mish", (18, 22))(_convert_mish)
