"""Split-18 (num_outputs)."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import constant_ints, converter


class OnnxSplitExact(nn.Module, OnnxToTorchModule):
    """Split-18: sizes from the 'split' input, or num_outputs chunks (the last one smaller)."""

    def __init__(self, axis: int, num_outputs: int, split: list[int] | None):
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs
        self.split = split

    def forward(  # noqa: D102
        self, input_tensor: torch.Tensor, split: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        sizes = self.split
        if sizes is None and split is not None and split.numel() > 0:
            sizes = [int(s) for s in split.tolist()]
        if sizes is None:
            length = input_tensor.shape[self.axis]
            chunk = -(-length // self.num_outputs)
            sizes = [max(0, min(chunk, length - i * chunk)) for i in range(self.num_outputs)]
        parts = torch.split(input_tensor, sizes, dim=self.axis)
        # onnx2torch indexes the result only for multi-output nodes
        return parts[0] if self.num_outputs == 1 else tuple(parts)


def _convert_split(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axis = int(node.attributes.get("axis", 0))
    num_outputs = len(node.output_values)
    has_split = len(node.input_values) > 1 and node.input_values[1] != ""
    split = constant_ints(node.input_values[1], graph) if has_split else None
    module = OnnxSplitExact(axis, num_outputs, split)
    if has_split and split is None:
        return OperationConverterResult(module, onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    return OperationConverterResult(module, mapping)


converter("Split", (18,))(_convert_split)
