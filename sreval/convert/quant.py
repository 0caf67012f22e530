"""Quantised graphs as fake quantisation: onnxruntime's int8 numbers forward, straight-through
gradients backward, so a gradient attack runs on the deployed int8 model.

A quantised tensor is carried as a float tensor that holds its integer values (exact in
float32 for 8- and 16-bit types); `QuantizeLinear` rounds half to even and saturates to the
zero point's type, as onnxruntime does, and passes the gradient straight through the rounding
(zero where it saturates, as the true derivative of the clamp). Convolutions and matrix
products of such tensors are computed in float on the integer values, which is exact while
the int32 accumulator stays under 2^24 (8-bit operands and up to 1000 terms of full scale),
then requantised as onnxruntime does: (acc + bias) * (x_scale * w_scale / y_scale), rounded.

Covered: QuantizeLinear and DequantizeLinear (per tensor and per axis, int8/uint8/int16/
uint16), DynamicQuantizeLinear, ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul (QDQ,
QOperator and dynamic quantisation), and the com.microsoft QLinear* element-wise, concat,
pooling and activation operators onnxruntime's QOperator format writes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import Tensor, nn

from sreval.convert.registry import MS_DOMAIN, converter

INT_RANGES = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
              TensorProto.INT16: (-32768, 32767)}


def along(v: Tensor, axis: int, rank: int) -> Tensor:
    """A per-axis scale or zero point shaped to broadcast on `axis` of a rank-`rank` tensor."""
    if v.dim() == 0 or v.numel() == 1:
        return v.reshape(())
    shape = [1] * rank
    shape[axis % rank] = v.numel()
    return v.reshape(shape)


def saturate(v: Tensor, zero: Tensor | float, bounds: tuple[int, int]) -> Tensor:
    """round(v) + zero saturated to `bounds`; the gradient of v where that is inside the
    bounds, zero where it saturates (what torch's fake quantisation does)."""
    q = torch.round(v) + zero
    inside = (q >= bounds[0]) & (q <= bounds[1])
    return torch.clamp(q, *bounds).detach() + (v - v.detach()) * inside


def quantize(x: Tensor, scale: Tensor, zero: Tensor | float, bounds: tuple[int, int]) -> Tensor:
    return saturate(x / scale, zero, bounds)


def _float(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.dtype if like.is_floating_point() else torch.float32)


def elem_type(name: str, graph: OnnxGraph, default: int = TensorProto.UINT8) -> int:
    """The ONNX element type of a value: an initializer's, or its value_info's."""
    if not name:
        return default
    if name in graph.initializers:
        return graph.initializers[name].proto.data_type
    info = graph.value_info.get(name)
    return info.type.tensor_type.elem_type if info is not None and info.type.tensor_type.elem_type else default


def int_range(name: str, graph: OnnxGraph, default: int = TensorProto.UINT8) -> tuple[int, int]:
    t = elem_type(name, graph, default)
    if t not in INT_RANGES:
        raise NotImplementedError(f"quantised type {TensorProto.DataType.Name(t)} is not supported "
                                  f"(int8, uint8, int16, uint16 are)")
    return INT_RANGES[t]


def _no_blocks(node: OnnxNode) -> None:
    if node.attributes.get("block_size", 0):
        raise NotImplementedError("blocked quantisation (block_size) is not supported")


# ----------------------------------------------------------------------------- Q / DQ


class QuantizeLinear(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int, bounds: tuple[int, int]):
        super().__init__()
        self.axis, self.bounds = axis, bounds

    def forward(self, x: Tensor, scale: Tensor, zero: Tensor | None = None) -> Tensor:  # noqa: D102
        s = along(_float(scale, x), self.axis, x.dim())
        z = along(_float(zero, x), self.axis, x.dim()) if zero is not None else 0.0
        return quantize(x, s, z, self.bounds)


class DequantizeLinear(nn.Module, OnnxToTorchModule):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, q: Tensor, scale: Tensor, zero: Tensor | None = None) -> Tensor:  # noqa: D102
        x = q.to(torch.float64 if q.dtype == torch.int32 else scale.dtype)  # int32 biases exceed float32's 2^24
        s = along(scale.to(x.dtype), self.axis, x.dim())
        if zero is not None:
            x = x - along(zero.to(x.dtype), self.axis, x.dim())
        return (x * s).to(scale.dtype)


def _convert_quantize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    _no_blocks(node)
    names = list(node.input_values)
    out_type = node.attributes.get("output_dtype", 0) or TensorProto.UINT8
    bounds = int_range(names[2] if len(names) > 2 else "", graph, out_type)
    return OperationConverterResult(QuantizeLinear(node.attributes.get("axis", 1), bounds), onnx_mapping_from_node(node))


def _convert_dequantize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    _no_blocks(node)
    del graph
    return OperationConverterResult(DequantizeLinear(node.attributes.get("axis", 1)), onnx_mapping_from_node(node))


class DynamicQuantizeLinear(nn.Module, OnnxToTorchModule):
    """uint8 quantisation with the range of the tensor itself (including 0); the scale and
    zero point are data, not a path for the gradient."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # noqa: D102
        with torch.no_grad():
            low, high = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
            scale = (high - low) / 255.0
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
            zero = torch.clamp(torch.round(-low / scale), 0, 255)
        return quantize(x, scale, zero, (0, 255)), scale, zero


def _convert_dynamic(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(DynamicQuantizeLinear(), onnx_mapping_from_node(node))


# ----------------------------------------------------------------------------- integer conv / matmul


class ConvArgs:
    """The convolution attributes of a Conv-like node, applied with explicit (possibly
    asymmetric) padding."""

    def __init__(self, node: OnnxNode):
        a = node.attributes
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise NotImplementedError(f"auto_pad={a['auto_pad']} is not supported")
        self.strides, self.dilations = a.get("strides"), a.get("dilations")
        self.pads, self.group = a.get("pads"), a.get("group", 1)

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        n = w.dim() - 2
        if self.pads and any(self.pads):
            begin, end = self.pads[:n], self.pads[n:]
            x = F.pad(x, [p for i in reversed(range(n)) for p in (begin[i], end[i])])
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return conv(x, w, None, self.strides or 1, 0, self.dilations or 1, self.group)


def less_zero(v: Tensor, zero: Tensor | None, axis: int) -> Tensor:
    """The integer values less their zero point (per tensor, or per `axis`), in float."""
    return v.float() - (along(zero.float(), axis, v.dim()) if zero is not None else 0.0)


class ConvInteger(nn.Module, OnnxToTorchModule):
    def __init__(self, node: OnnxNode):
        super().__init__()
        self.conv = ConvArgs(node)

    def forward(self, x: Tensor, w: Tensor, x_zero: Tensor | None = None,  # noqa: D102
                w_zero: Tensor | None = None) -> Tensor:
        return self.conv(less_zero(x, x_zero, 1), less_zero(w, w_zero, 0))


class MatMulInteger(nn.Module, OnnxToTorchModule):
    def forward(self, a: Tensor, b: Tensor, a_zero: Tensor | None = None,  # noqa: D102
                b_zero: Tensor | None = None) -> Tensor:
        return torch.matmul(less_zero(a, a_zero, -2), less_zero(b, b_zero, -1))  # per row of A, per column of B


def _convert_conv_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(ConvInteger(node), onnx_mapping_from_node(node))


def _convert_matmul_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    del graph
    return OperationConverterResult(MatMulInteger(), onnx_mapping_from_node(node))


class QLinearConv(nn.Module, OnnxToTorchModule):
    """int8 convolution: the int32 accumulator (with the int32 bias), requantised."""

    def __init__(self, node: OnnxNode, bounds: tuple[int, int]):
        super().__init__()
        self.conv, self.bounds = ConvArgs(node), bounds

    def forward(self, x: Tensor, xs: Tensor, xz: Tensor, w: Tensor, ws: Tensor, wz: Tensor,  # noqa: D102
                ys: Tensor, yz: Tensor, bias: Tensor | None = None) -> Tensor:
        acc = self.conv(less_zero(x, xz, 1), less_zero(w, wz, 0))
        if bias is not None:
            acc = acc + along(bias.float(), 1, acc.dim())
        multiplier = along((xs.float() * ws.float()) / ys.float(), 1, acc.dim())
        return saturate(acc * multiplier, yz.float(), self.bounds)


def _convert_qlinear_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    bounds = int_range(node.input_values[7], graph)
    return OperationConverterResult(QLinearConv(node, bounds), onnx_mapping_from_node(node))


class QLinearMatMul(nn.Module, OnnxToTorchModule):
    def __init__(self, bounds: tuple[int, int]):
        super().__init__()
        self.bounds = bounds

    def forward(self, a: Tensor, a_s: Tensor, a_z: Tensor, b: Tensor, b_s: Tensor, b_z: Tensor,  # noqa: D102
                y_s: Tensor, y_z: Tensor) -> Tensor:
        acc = torch.matmul(less_zero(a, a_z, -2), less_zero(b, b_z, -1))
        return saturate(acc * (a_s.float() * b_s.float() / y_s.float()), y_z.float(), self.bounds)


def _convert_qlinear_matmul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    bounds = int_range(node.input_values[7], graph)
    return OperationConverterResult(QLinearMatMul(bounds), onnx_mapping_from_node(node))


# ----------------------------------------------------------------------------- com.microsoft QLinear*


class QLinearFloat(nn.Module, OnnxToTorchModule):
    """A float operation between dequantised inputs, its result quantised: the pattern of
    onnxruntime's QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, pooling, ...

    `layout` says where each input's (value, scale, zero point) and the output's (scale,
    zero point) sit in the node's inputs."""

    def __init__(self, op: nn.Module, triples: list[tuple[int, int, int]], out: tuple[int, int],
                 bounds: tuple[int, int]):
        super().__init__()
        self.op, self.triples, self.out, self.bounds = op, triples, out, bounds

    def forward(self, *inputs: Tensor | None) -> Tensor:  # noqa: D102
        values = []
        for v, s, z in self.triples:
            zero = inputs[z].float() if z >= 0 and inputs[z] is not None else 0.0
            values.append((inputs[v].float() - zero) * inputs[s].float())
        y_z = inputs[self.out[1]]
        y = self.op(*values)
        return quantize(y, inputs[self.out[0]].float(), y_z.float() if y_z is not None else 0.0, self.bounds)


class _Apply(nn.Module):
    def __init__(self, fn):  # noqa: ANN001
        super().__init__()
        self.fn = fn

    def forward(self, *xs: Tensor) -> Tensor:  # noqa: D102
        return self.fn(*xs)


def _qlinear(node: OnnxNode, graph: OnnxGraph, fn, triples: list[tuple[int, int, int]],  # noqa: ANN001
             out: tuple[int, int]) -> OperationConverterResult:
    names = list(node.input_values)
    bounds = int_range(names[out[1]] if out[1] < len(names) else "", graph)
    # every input slot is passed (an empty optional zero point as None), so indices stay fixed
    padded = names + [""] * (max(max(t) for t in triples + [out]) + 1 - len(names))
    module = QLinearFloat(_Apply(fn), triples, out, bounds)
    return OperationConverterResult(module, OnnxMapping(inputs=tuple(padded), outputs=node.output_values))


def _convert_qlinear_binary(fn):  # noqa: ANN001, ANN202
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        return _qlinear(node, graph, fn, [(0, 1, 2), (3, 4, 5)], (6, 7))
    return convert


def _convert_qlinear_unary(fn_of_node):  # noqa: ANN001, ANN202
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        return _qlinear(node, graph, fn_of_node(node), [(0, 1, 2)], (3, 4))
    return convert


def _convert_qlinear_concat(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    axis = node.attributes["axis"]
    n = (len(node.input_values) - 2) // 3
    triples = [(2 + 3 * i, 3 + 3 * i, 4 + 3 * i) for i in range(n)]
    return _qlinear(node, graph, lambda *xs: torch.cat(xs, dim=axis), triples, (0, 1))


def _pool_fn(node: OnnxNode):  # noqa: ANN202
    a = node.attributes
    kernel, strides = a["kernel_shape"], a.get("strides", [1] * len(a["kernel_shape"]))
    pads = a.get("pads", [0] * 2 * len(kernel))
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or a.get("ceil_mode", 0) or a.get("channels_last", 0):
        raise NotImplementedError("QLinearAveragePool with auto_pad, ceil_mode or channels_last is not supported")
    n = len(kernel)
    include = bool(a.get("count_include_pad", 0))

    def pool(x: Tensor) -> Tensor:
        xp = F.pad(x, [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])])
        total = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1](xp, kernel, strides, 0) * math.prod(kernel)
        if include:
            return total / math.prod(kernel)
        ones = F.pad(torch.ones_like(x[:1, :1]), [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])])
        count = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1](ones, kernel, strides, 0) * math.prod(kernel)
        return total / count
    return pool


def _global_pool_fn(node: OnnxNode):  # noqa: ANN202
    last = bool(node.attributes.get("channels_last", 0))
    return lambda x: x.mean(dim=tuple(range(1, x.dim() - 1)) if last else tuple(range(2, x.dim())), keepdim=True)


OPERATORS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
             "QLinearConv", "QLinearMatMul")  # of the ONNX domain; the com.microsoft ones below
converter("QuantizeLinear", (10, 13, 19, 21, 23, 24, 25, 28))(_convert_quantize)
converter("DequantizeLinear", (10, 13, 19, 21, 23, 24, 25, 28))(_convert_dequantize)
converter("DynamicQuantizeLinear", (11,))(_convert_dynamic)
converter("ConvInteger", (10,))(_convert_conv_integer)
converter("MatMulInteger", (10,))(_convert_matmul_integer)
converter("QLinearConv", (10,))(_convert_qlinear_conv)
converter("QLinearMatMul", (10, 21))(_convert_qlinear_matmul)
for _name, _fn in (("QuantizeLinear", _convert_quantize), ("DequantizeLinear", _convert_dequantize),
                   ("QLinearConv", _convert_qlinear_conv), ("DynamicQuantizeLinear", _convert_dynamic)):
    converter(_name, (1,), MS_DOMAIN)(_fn)  # the com.microsoft twins older exporters write
converter("QLinearAdd", (1,), MS_DOMAIN)(_convert_qlinear_binary(torch.add))
converter("QLinearMul", (1,), MS_DOMAIN)(_convert_qlinear_binary(torch.mul))
converter("QLinearConcat", (1,), MS_DOMAIN)(_convert_qlinear_concat)
converter("QLinearSigmoid", (1,), MS_DOMAIN)(_convert_qlinear_unary(lambda node: torch.sigmoid))
converter("QLinearLeakyRelu", (1,), MS_DOMAIN)(_convert_qlinear_unary(
    lambda node: lambda x: F.leaky_relu(x, node.attributes.get("alpha", 0.01))))
converter("QLinearAveragePool", (1,), MS_DOMAIN)(_convert_qlinear_unary(_pool_fn))
converter("QLinearGlobalAveragePool", (1,), MS_DOMAIN)(_convert_qlinear_unary(_global_pool_fn))
