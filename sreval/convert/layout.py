"""DepthToSpace in both modes (DCR and CRD) and SpaceToDepth."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from sreval.convert.registry import converter


class OnnxDepthToSpaceExact(nn.Module, OnnxToTorchModule):
    """DepthToSpace in both modes: CRD is torch's pixel_shuffle; DCR (TensorFlow) is not."""

    def __init__(self, blocksize: int, mode: str):
        super().__init__()
        self.blocksize = blocksize
        self.mode = mode

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b = self.blocksize
        if self.mode == "CRD":
            return F.pixel_shuffle(input_tensor, b)
        n, c, h, w = input_tensor.shape
        # DCR: the channel index is (row offset, column offset, depth), depth fastest.
        blocks = input_tensor.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return blocks.reshape(n, c // (b * b), h * b, w * b)


class OnnxSpaceToDepth(nn.Module, OnnxToTorchModule):
    """SpaceToDepth: channel index (row offset, column offset, depth); pixel_unshuffle differs."""

    def __init__(self, blocksize: int):
        super().__init__()
        self.blocksize = blocksize

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b = self.blocksize
        n, c, h, w = input_tensor.shape
        blocks = input_tensor.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return blocks.reshape(n, c * b * b, h // b, w // b)


def _convert_depth_to_space(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    mode = node.attributes.get("mode", "DCR")  # DepthToSpace-1 has no mode: it is DCR
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f'DepthToSpace mode "{mode}" is not supported')
    module = OnnxDepthToSpaceExact(int(node.attributes["blocksize"]), mode)
    return OperationConverterResult(module, onnx_mapping_from_node(node))


def _convert_space_to_depth(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = OnnxSpaceToDepth(int(node.attributes["blocksize"]))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


converter("DepthToSpace", (1, 11, 13, 28))(_convert_depth_to_space)
converter("SpaceToDepth", (1, 13))(_convert_space_to_depth)
