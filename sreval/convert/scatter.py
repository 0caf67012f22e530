"""ScatterND-11/13/16/18 with every reduction, and with zero-element updates.

onnx2torch's converter indexes with a list of index lists (deprecated by torch, which warns that
it will become an error or a different result), refuses reductions, and fails on the
zero-element data the dynamo export of a shifted-window mask writes (`img_mask[:, h, w, :] =
cnt` with an empty slice: "cannot reshape tensor of 0 elements into shape [-1, 0, ...]"). This one uses `index_put` (differentiable in
data and updates) and `scatter_reduce` for mul/max/min.
"""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from sreval.convert.registry import converter

REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


class OnnxScatterNDExact(nn.Module, OnnxToTorchModule):
    def __init__(self, reduction: str):
        super().__init__()
        self.reduction = reduction

    def forward(  # noqa: D102
        self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        if indices.numel() == 0 or updates.numel() == 0:
            return data.clone()
        k = int(indices.shape[-1])
        lead = torch.tensor(data.shape[:k], device=indices.device)
        idx = indices.reshape(-1, k).long()
        idx = torch.where(idx < 0, idx + lead, idx)  # negative indices count from the back
        upd = updates.reshape(idx.shape[0], *data.shape[k:]).to(data.dtype)
        if self.reduction in ("none", "add"):
            index = tuple(idx[:, i] for i in range(k))
            return data.index_put(index, upd, accumulate=self.reduction == "add")
        strides = [math.prod(data.shape[i + 1:k]) for i in range(k)]
        flat = (idx * torch.tensor(strides, device=idx.device)).sum(dim=1)
        rows = data.reshape(-1, *data.shape[k:])
        where = flat.reshape(-1, *([1] * (rows.dim() - 1))).expand_as(upd)
        return rows.scatter_reduce(0, where, upd, reduce=REDUCE[self.reduction]).reshape(data.shape)


def _convert_scatter_nd(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    reduction = node.attributes.get("reduction", "none")
    if reduction not in ("none", "add", *REDUCE):
        raise NotImplementedError(f"ScatterND with reduction {reduction!r}")
    return OperationConverterResult(OnnxScatterNDExact(reduction),
                                    OnnxMapping(inputs=tuple(node.input_values), outputs=node.output_values))


converter("ScatterND", (11, 13, 16, 18))(_convert_scatter_nd)
