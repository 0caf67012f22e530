"""Reduce*-18+: axes as an optional input."""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import constant_ints, converter


def _reduce_prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):  # highest first so lower indices stay valid
        x = torch.prod(x, dim=dim, keepdim=keepdim)
    return x


_REDUCERS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _reduce_prod,
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    # vector_norm has a zero subgradient at 0 where sqrt(sum(x^2)) would give NaN
    "ReduceL2": lambda x, d, k: torch.linalg.vector_norm(x, ord=2, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
}


class OnnxReduceExact(nn.Module, OnnxToTorchModule):
    """Reduce*-18+: axes is an optional input; empty axes reduce all, or nothing with noop."""

    def __init__(self, operation: str, keepdims: bool, noop_with_empty_axes: bool, axes: list[int] | None):
        super().__init__()
        self.operation = operation
        self.keepdims = keepdims
        self.noop_with_empty_axes = noop_with_empty_axes
        self.axes = axes  # known at conversion time (constant input), else read per call

    def forward(self, input_tensor: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        dims = self.axes
        if dims is None:
            dims = [int(a) for a in axes.tolist()] if axes is not None else []
        if not dims:
            if self.noop_with_empty_axes:
                return input_tensor
            dims = list(range(input_tensor.dim()))
        rank = max(input_tensor.dim(), 1)
        dims = sorted({d % rank for d in dims})
        return _REDUCERS[self.operation](input_tensor, dims, self.keepdims)


def _convert_reduce(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    has_axes = len(node.input_values) > 1 and node.input_values[1] != ""
    axes = constant_ints(node.input_values[1], graph) if has_axes else []
    module = OnnxReduceExact(node.operation_type, keepdims, noop, axes)
    if axes is None:  # runtime axes: keep the second input
        return OperationConverterResult(module, onnx_mapping_from_node(node))
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    return OperationConverterResult(module, mapping)


REDUCE_VERSIONS: dict[str, tuple[int, ...]] = {
    "ReduceMean": (18,), "ReduceL1": (18,), "ReduceL2": (18,), "ReduceProd": (18,),
    "ReduceSumSquare": (18,), "ReduceMax": (18, 20), "ReduceMin": (18, 20),
    "ReduceLogSum": (18, 28), "ReduceLogSumExp": (18, 28),
}
for _operation, _versions in REDUCE_VERSIONS.items():
    converter(_operation, _versions)(_convert_reduce)
