"""Pad-18+ (an optional axes input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


class OnnxPadExact(nn.Module, OnnxToTorchModule):
    """Pad-11..25: pads (and optional axes) as inputs; modes constant/reflect/edge/wrap.

    Non-constant modes index each padded axis with reflected/clamped/wrapped positions, which
    works on any axis and rank (F.pad only pads the last dims) and also crops for negative pads.
    """

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(  # noqa: D102
        self,
        input_tensor: torch.Tensor,
        pads: torch.Tensor,
        constant_value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank = input_tensor.dim()
        axis_list = [a % rank for a in axes.tolist()] if axes is not None else list(range(rank))
        pad_list = [int(p) for p in pads.tolist()]
        if len(pad_list) != 2 * len(axis_list):
            raise ValueError(f"Pad got {len(pad_list)} pads for {len(axis_list)} axes")
        begins, ends = pad_list[: len(axis_list)], pad_list[len(axis_list):]
        if self.mode == "constant":
            value = 0.0
            if constant_value is not None and constant_value.numel() > 0:
                value = constant_value.item()
            return _pad_constant(input_tensor, dict(zip(axis_list, zip(begins, ends))), value)
        result = input_tensor
        for axis, begin, end in zip(axis_list, begins, ends):
            if begin or end:
                result = _pad_by_index(result, axis, begin, end, self.mode)
        return result


def _pad_constant(x: torch.Tensor, per_axis: dict[int, tuple[int, int]], value: float) -> torch.Tensor:
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):  # F.pad lists the last axis first
        torch_pads.extend(per_axis.get(axis, (0, 0)))
    return F.pad(x, torch_pads, mode="constant", value=value)


def _pad_by_index(x: torch.Tensor, axis: int, begin: int, end: int, mode: str) -> torch.Tensor:
    length = x.shape[axis]
    positions = torch.arange(-begin, length + end, device=x.device)
    if mode == "edge":
        index = positions.clamp(0, length - 1)
    elif mode == "wrap":
        index = positions.remainder(length)
    elif length == 1:  # reflect of a single element repeats it
        index = torch.zeros_like(positions)
    else:
        period = 2 * (length - 1)
        folded = positions.remainder(period)
        index = torch.where(folded >= length, period - folded, folded)
    return x.index_select(axis, index)


def _convert_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    mode = node.attributes.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise NotImplementedError(f'Pad mode "{mode}" is not supported')
    return OperationConverterResult(OnnxPadExact(mode), onnx_mapping_from_node(node))


converter("Pad", (18, 19, 21, 23, 24, 25))(_convert_pad)
