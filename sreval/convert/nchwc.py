"""onnxruntime's blocked-layout CPU operators (com.microsoft.nchwc), written into a model saved
at optimisation level ALL: `ReorderInput` / `ReorderOutput` around `Conv` (with a fused
activation and residual sum), pooling and `Upsample` that work on NCHWc tensors, whose
channels are stored in blocks of the CPU's vector width and padded to a whole block.

Here every tensor stays in plain NCHW, with the channels padded as onnxruntime pads them:
`ReorderInput` pads, `ReorderOutput` crops, and each `Conv` gets its filter back in OIHW from
the block order onnxruntime stored it in ([O/B][I][H][W][Bo] for an NCHW input or a depthwise
filter, else [O/B][I/B][H][W][Bi][Bo]). The block size B is not in the file: it is this
machine's onnxruntime's (a saved ALL-level model is only valid where it was made, as
onnxruntime warns), found once by letting it reorder a known filter.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import Tensor, nn

from sreval.convert.contrib import activation
from sreval.convert.quant import ConvArgs
from sreval.convert.registry import NCHWC_DOMAIN, converter, simple


def _blocked(w: np.ndarray, block: int) -> np.ndarray:
    """OIHW -> [O/B][I][H][W][Bo] with O padded to whole blocks (flattened)."""
    o, i, h, k = w.shape
    padded = np.zeros((-(-o // block) * block, i, h, k), w.dtype)
    padded[:o] = w
    return padded.reshape(-1, block, i, h, k).transpose(0, 2, 3, 4, 1).reshape(-1)


@functools.lru_cache(maxsize=1)
def block_size() -> int | None:
    """The NCHWc block size of this machine's onnxruntime (None where it writes no NCHWc)."""
    import onnxruntime as ort

    w = np.arange(64 * 3, dtype=np.float32).reshape(64, 3, 1, 1)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warning that the file is hardware-specific
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "probe.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        saved = onnx.load(options.optimized_model_filepath)
    stored = [numpy_helper.to_array(t).reshape(-1) for t in saved.graph.initializer if t.dims[0] == 64]
    if not stored or not any(n.domain == NCHWC_DOMAIN for n in saved.graph.node):
        return None
    return next((b for b in (4, 8, 16, 32, 64) if np.array_equal(_blocked(w, b), stored[0])), None)


def unblock_filter(w: np.ndarray, block: int, input_blocked: bool) -> np.ndarray:
    """The stored (reordered) filter of an NCHWc Conv back in OIHW (shape as stored: padded)."""
    o, i, h, k = w.shape
    flat = w.reshape(-1)
    if not input_blocked:
        return flat.reshape(o // block, i, h, k, block).transpose(0, 4, 1, 2, 3).reshape(o, i, h, k)
    return flat.reshape(o // block, i // block, h, k, block, block).transpose(0, 5, 1, 4, 2, 3).reshape(o, i, h, k)


class NchwcConv(nn.Module, OnnxToTorchModule):
    """activation(conv(X, W, B) + Sum) on channel-padded NCHW tensors."""

    def __init__(self, node: OnnxNode, weight: np.ndarray, bias: np.ndarray | None):
        super().__init__()
        a = node.attributes
        self.conv = ConvArgs(node)
        self.act = activation(a.get("activation", ""), list(a.get("activation_params", [])))
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight)))
        padded = None
        if bias is not None:
            padded = np.zeros(weight.shape[0], bias.dtype)
            padded[:bias.size] = bias
        self.register_buffer("bias", torch.from_numpy(padded) if padded is not None else None)

    def forward(self, x: Tensor, total: Tensor | None = None) -> Tensor:  # noqa: D102
        y = self.conv(x, self.weight)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return self.act(y + total if total is not None else y)


def _convert_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    block = block_size()
    if block is None:
        raise NotImplementedError("an NCHWc model, but this machine's onnxruntime writes no NCHWc layout")
    names = list(node.input_values) + [""] * 4
    if names[1] not in graph.initializers or (names[2] and names[2] not in graph.initializers):
        raise NotImplementedError("an NCHWc Conv whose filter or bias is computed")
    stored = graph.initializers[names[1]].to_numpy()
    group = node.attributes.get("group", 1)
    # onnxruntime feeds an NCHWc Conv plain NCHW when its input has fewer channels than a block,
    # and keeps a depthwise filter output-blocked only
    depthwise = group > 1 and stored.shape[1] == 1
    input_blocked = not depthwise and stored.shape[1] >= block
    weight = unblock_filter(stored, block, input_blocked)
    bias = graph.initializers[names[2]].to_numpy() if names[2] else None
    inputs = (names[0], names[3]) if names[3] else (names[0],)
    return OperationConverterResult(NchwcConv(node, weight, bias), OnnxMapping(inputs=inputs, outputs=node.output_values))


class Reorder(nn.Module, OnnxToTorchModule):
    """NCHW(c) in and out: `pad_to` channels padded to a whole block (ReorderInput) or
    `channels` kept (ReorderOutput); NHWC on the outer side where channels_last."""

    def __init__(self, block: int | None, channels: int | None, channels_last: bool):
        super().__init__()
        self.block, self.channels, self.channels_last = block, channels, channels_last

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.block is not None:  # ReorderInput
            if self.channels_last:
                x = x.permute(0, 3, 1, 2)
            extra = -x.shape[1] % self.block
            return F.pad(x, [0, 0, 0, 0, 0, extra]) if extra else x
        y = x[:, :self.channels]
        return y.permute(0, 2, 3, 1) if self.channels_last else y


def _convert_reorder_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    block = block_size()
    if block is None:
        raise NotImplementedError("an NCHWc model, but this machine's onnxruntime writes no NCHWc layout")
    module = Reorder(block, None, bool(node.attributes.get("channels_last", 0)))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


def _convert_reorder_output(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    module = Reorder(None, node.attributes["channels"], bool(node.attributes.get("channels_last", 0)))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


class Pool(nn.Module, OnnxToTorchModule):
    def __init__(self, node: OnnxNode, kind: str):
        super().__init__()
        a = node.attributes
        self.kind, self.global_ = kind, node.operation_type.startswith("Global")
        if not self.global_:
            if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                raise NotImplementedError(f"NCHWc pooling with auto_pad={a['auto_pad']} is not supported")
            self.kernel, self.strides = a["kernel_shape"], a.get("strides", [1, 1])
            self.pads, self.dilations = a.get("pads", [0, 0, 0, 0]), a.get("dilations", [1, 1])
            self.ceil, self.include = bool(a.get("ceil_mode", 0)), bool(a.get("count_include_pad", 0))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.global_:
            return x.amax((2, 3), keepdim=True) if self.kind == "max" else x.mean((2, 3), keepdim=True)
        t, left, b, r = self.pads
        if self.kind == "max":
            xp = F.pad(x, [left, r, t, b], value=-torch.inf)
            return F.max_pool2d(xp, self.kernel, self.strides, 0, self.dilations, ceil_mode=self.ceil)
        total = F.avg_pool2d(F.pad(x, [left, r, t, b]), self.kernel, self.strides, 0, self.ceil, True, 1)
        if self.include:
            return total
        ones = F.pad(torch.ones_like(x[:1, :1]), [left, r, t, b])
        return total / F.avg_pool2d(ones, self.kernel, self.strides, 0, self.ceil, True, 1)


class Upsample(nn.Module, OnnxToTorchModule):
    def __init__(self, node: OnnxNode):
        super().__init__()
        a = node.attributes
        self.scales = [int(s) for s in a["scales"]][-2:]
        self.mode = a.get("mode", "nearest")
        self.align = a.get("coordinate_transformation_mode", "asymmetric")
        if self.mode not in ("nearest", "linear") or self.align not in ("asymmetric", "half_pixel", "align_corners"):
            raise NotImplementedError(f"NCHWc Upsample mode {self.mode!r} with {self.align!r} is not supported")

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.mode == "nearest":
            return x.repeat_interleave(self.scales[0], 2).repeat_interleave(self.scales[1], 3)
        if self.align == "asymmetric":  # x_in = x_out / scale, clamped at the end
            h, w = x.shape[-2] * self.scales[0], x.shape[-1] * self.scales[1]
            gy = torch.arange(h, device=x.device, dtype=x.dtype) / self.scales[0]
            gx = torch.arange(w, device=x.device, dtype=x.dtype) / self.scales[1]
            gy = gy.clamp(max=x.shape[-2] - 1) / max(x.shape[-2] - 1, 1) * 2 - 1
            gx = gx.clamp(max=x.shape[-1] - 1) / max(x.shape[-1] - 1, 1) * 2 - 1
            grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).expand(x.shape[0], h, w, 2)
            return F.grid_sample(x, grid, mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=self.scales, mode="bilinear", align_corners=self.align == "align_corners")


converter("Conv", (1,), NCHWC_DOMAIN)(_convert_conv)
converter("ReorderInput", (1,), NCHWC_DOMAIN)(_convert_reorder_input)
converter("ReorderOutput", (1,), NCHWC_DOMAIN)(_convert_reorder_output)
converter("MaxPool", (1,), NCHWC_DOMAIN)(simple(lambda node: Pool(node, "max")))
converter("AveragePool", (1,), NCHWC_DOMAIN)(simple(lambda node: Pool(node, "average")))
converter("GlobalMaxPool", (1,), NCHWC_DOMAIN)(simple(lambda node: Pool(node, "max")))
converter("GlobalAveragePool", (1,), NCHWC_DOMAIN)(simple(lambda node: Pool(node, "average")))
converter("Upsample", (1,), NCHWC_DOMAIN)(simple(Upsample))
