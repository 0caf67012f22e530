"""LayerNormalization-17 (dynamic shapes) and BatchNormalization-7."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter, get_converter


class OnnxLayerNormExact(nn.Module, OnnxToTorchModule):
    """LayerNormalization over axes [axis, rank) with scale/bias given as inputs."""

    def __init__(self, axis: int, epsilon: float):
        super().__init__()
        self.axis = axis
        self.epsilon = epsilon

    def forward(  # noqa: D102
        self, input_tensor: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        shape = input_tensor.shape[self.axis:]
        if scale.shape == shape and (bias is None or bias.shape == shape):
            return F.layer_norm(input_tensor, shape, scale, bias, self.epsilon)
        normed = F.layer_norm(input_tensor, shape, eps=self.epsilon) * scale  # broadcasting scale
        return normed if bias is None else normed + bias


def _convert_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """onnx2torch took normalized_shape from inferred shapes, which are 0 for dynamic dims."""
    if any(node.output_values[1:]):
        raise NotImplementedError("LayerNormalization with Mean/InvStdDev outputs is not supported")
    axis = int(node.attributes.get("axis", -1))
    epsilon = float(node.attributes.get("epsilon", 1e-5))
    module = _layer_norm_with_weights(node, graph, axis, epsilon)
    if module is None:  # scale/bias computed in the graph, or shapes that need broadcasting
        return OperationConverterResult(OnnxLayerNormExact(axis, epsilon), onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values[:1])
    return OperationConverterResult(module, mapping)


def _layer_norm_with_weights(node: OnnxNode, graph: OnnxGraph, axis: int, epsilon: float) -> nn.LayerNorm | None:
    """nn.LayerNorm shaped like the constant scale, when it covers exactly the normalised axes."""
    params = [name for name in node.input_values[1:] if name]
    if not all(name in graph.initializers for name in params):
        return None
    info = graph.value_info.get(node.input_values[0])
    rank = len(info.type.tensor_type.shape.dim) if info is not None else 0
    normalized_dims = -axis if axis < 0 else rank - axis
    scale = graph.initializers[params[0]].to_torch()
    bias = graph.initializers[params[1]].to_torch() if len(params) > 1 else None
    if normalized_dims <= 0 or scale.dim() != normalized_dims or (bias is not None and bias.shape != scale.shape):
        return None
    module = nn.LayerNorm(list(scale.shape), eps=epsilon, bias=bias is not None)
    with torch.no_grad():
        module.weight.copy_(scale)
        if bias is not None:
            module.bias.copy_(bias)
    return module


def _convert_batch_norm_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """BatchNormalization-7 is BatchNormalization-9 plus a 'spatial' flag."""
    if node.attributes.get("spatial", 1) != 1:
        raise NotImplementedError("BatchNormalization with spatial=0 is not supported")
    return get_converter("BatchNormalization", 9)(node, graph)


converter("LayerNormalization", (17,))(_convert_layer_norm)
converter("BatchNormalization", (7,))(_convert_batch_norm_7)
