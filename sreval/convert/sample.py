"""GridSample-16/20/22 (DySample upsamplers, flow warps): onnx2torch 1.5.15 has no converter.

torch.nn.functional.grid_sample computes what ONNX specifies for 4-D inputs: the same modes
(ONNX-20 renamed bilinear/bicubic to linear/cubic; cubic is a = -0.75 on both sides), padding
modes and align_corners meaning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from sreval.convert.registry import converter

MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic", "cubic": "bicubic"}
PADDING = ("zeros", "border", "reflection")


class OnnxGridSample(nn.Module, OnnxToTorchModule):
    def __init__(self, mode: str, padding_mode: str, align_corners: bool):
        super().__init__()
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.dim() != 4:
            raise NotImplementedError(f"GridSample on a {x.dim()}-D input: only 4-D (N, C, H, W) is supported")
        return F.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=self.align_corners)


def _convert_grid_sample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    attrs = node.attributes
    mode = attrs.get("mode", "bilinear")  # the default of every version (named linear from 20 on)
    padding = attrs.get("padding_mode", "zeros")
    if mode not in MODES or padding not in PADDING:
        raise NotImplementedError(f"GridSample with mode={mode!r}, padding_mode={padding!r}")
    module = OnnxGridSample(MODES[mode], padding, bool(attrs.get("align_corners", 0)))
    mapping = OnnxMapping(inputs=tuple(node.input_values[:2]), outputs=node.output_values)
    return OperationConverterResult(module, mapping)


converter("GridSample", (16, 20, 22))(_convert_grid_sample)
