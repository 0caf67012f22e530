"""Slice-1 (attributes) and Slice-10+ (inputs), negative steps included."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


def _slice(
    x: torch.Tensor, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None, steps: Sequence[int] | None
) -> torch.Tensor:
    """ONNX Slice. Python's slice.indices clamps exactly as ONNX does, negative steps included."""
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    reversed_axes: list[tuple[int, range]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        first, stop, stride = slice(int(start), int(end), int(step)).indices(x.shape[axis])
        if stride > 0:
            index[axis] = slice(first, stop, stride)
        else:  # torch tensors have no negative strides: gather instead
            reversed_axes.append((axis, range(first, stop, stride)))
    result = x[tuple(index)]
    for axis, positions in reversed_axes:
        result = result.index_select(axis, torch.tensor(positions, dtype=torch.long, device=x.device))
    return result


class OnnxSliceExact(nn.Module, OnnxToTorchModule):
    """Slice-10+: starts/ends/axes/steps are inputs (onnx2torch indexed with a list of slices,
    which torch deprecates)."""

    def forward(  # noqa: D102
        self,
        input_tensor: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        axes: torch.Tensor | None = None,
        steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _slice(
            input_tensor,
            starts.tolist(),
            ends.tolist(),
            axes.tolist() if axes is not None else None,
            steps.tolist() if steps is not None else None,
        )


class OnnxSliceV1(nn.Module, OnnxToTorchModule):
    """Slice-1: starts/ends/axes are attributes (opset <= 9)."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int] | None):
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _slice(input_tensor, self.starts, self.ends, self.axes, None)


def _convert_slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(OnnxSliceExact(), onnx_mapping_from_node(node))


def _convert_slice_1(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    attrs = node.attributes
    axes = attrs.get("axes")
    module = OnnxSliceV1(list(attrs["starts"]), list(attrs["ends"]), list(axes) if axes else None)
    return OperationConverterResult(module, onnx_mapping_from_node(node))


converter("Slice", (1,))(_convert_slice_1)
converter("Slice", (10, 11, 13))(_convert_slice)
