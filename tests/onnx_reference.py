"""An independent PyTorch interpreter of the ONNX graphs in the deployment registry
(tests/deployed.py), written from the ONNX and onnxruntime operator specifications and
sharing no code with sreval.convert: the 'PyTorch re-implementation of the deployed
computation' that sreval's attack on a quantised file is compared with.

Quantisation divides by the scale as onnxruntime does (torch's own fake quantisation multiplies
by 1 / scale, which rounds some ties the other way, and a flipped rounding moves everything
downstream), rounds half to even, saturates, and passes the gradient straight through inside
the range; a quantised tensor is a float holding its integers. Only the operators the registry's
graphs use are here; any other is an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor

BOUNDS = {onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT8: (-128, 127)}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _fake(x: Tensor, scale: Tensor, zero: Tensor, bounds: tuple[int, int], axis: int) -> Tensor:
    """The integers (as floats) of x quantised with scale and zero point, per tensor or per axis."""
    shape = [1] * x.dim()
    if scale.numel() > 1:
        shape[axis % x.dim()] = -1
    return _saturate(x / scale.float().view(shape), zero.float().view(shape), bounds)


def _saturate(steps: Tensor, zero: Tensor, bounds: tuple[int, int]) -> Tensor:
    q = torch.round(steps) + zero
    inside = ((q >= bounds[0]) & (q <= bounds[1])).float()
    return torch.clamp(q, *bounds).detach() + (steps - steps.detach()) * inside


def _dq(q: Tensor, scale: Tensor, zero: Tensor | None, axis: int = 1) -> Tensor:
    shape = [1] * max(q.dim(), 1)
    if scale.numel() > 1:
        shape[axis % q.dim()] = -1
    z = zero.double().view(shape) if zero is not None else 0.0
    return ((q.double() - z) * scale.double().view(shape)).float()


def _conv(x: Tensor, w: Tensor, b: Tensor | None, a: dict[str, Any]) -> Tensor:
    """Conv in channels_last, the memory format sreval's attack uses on CPU: float32 summation
    order differs between formats, and a different order flips quantisation roundings."""
    pads = a.get("pads", [0] * 4)
    x = F.pad(x, [pads[1], pads[3], pads[0], pads[2]]).contiguous(memory_format=torch.channels_last)
    w = w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w, b, a.get("strides", 1), 0, a.get("dilations", 1), a.get("group", 1))


class Reference:
    """The graph as a function of its one image input (float tensors, NCHW or as the graph says)."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
        self.types = {t.name: t.data_type for t in model.graph.initializer}
        self.types.update({n.output[0]: a.t.data_type for n in model.graph.node if n.op_type == "Constant"
                           for a in n.attribute if a.name == "value"})

    def __call__(self, x: Tensor) -> Tensor:
        env: dict[str, Any] = dict(self.consts)
        env[self.graph.input[0].name] = x
        for node in self.graph.node:
            a = _attrs(node)
            ins = [env[i] if i else None for i in node.input]
            outs = self._run(node, ins, a)
            for name, value in zip(node.output, outs if isinstance(outs, (tuple, list)) else [outs]):
                env[name] = value
        return env[self.graph.output[0].name]

    def _bounds(self, node: onnx.NodeProto, index: int) -> tuple[int, int]:
        name = node.input[index] if len(node.input) > index else ""
        return BOUNDS[self.types.get(name, onnx.TensorProto.UINT8)]

    def _run(self, node: onnx.NodeProto, ins: list[Any], a: dict[str, Any]) -> Any:
        op = node.op_type
        if op == "QuantizeLinear":
            zero = ins[2] if len(ins) > 2 and ins[2] is not None else torch.tensor(0)
            return _fake(ins[0], ins[1], zero, self._bounds(node, 2), a.get("axis", 1))
        if op == "DequantizeLinear":
            return _dq(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a.get("axis", 1))
        if op == "DynamicQuantizeLinear":
            x = ins[0].detach()  # in float32, as onnxruntime computes them
            lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
            scale = (hi - lo) / 255.0 if hi > lo else torch.tensor(1.0)
            zero = torch.clamp(torch.round(-lo / scale), 0, 255)
            return _fake(ins[0], scale, zero, (0, 255), 1), scale, zero
        if op == "ConvInteger":
            xz = ins[2].float() if len(ins) > 2 and ins[2] is not None else 0.0
            wz = ins[3].float() if len(ins) > 3 and ins[3] is not None else 0.0
            return _conv(ins[0].float() - xz, ins[1].float() - wz, None, a)
        if op == "QLinearConv":  # onnxruntime: an int32 accumulator, then one requantisation
            w_zero = ins[5].float().reshape(-1, 1, 1, 1) if ins[5].numel() > 1 else ins[5].float()
            acc = _conv(ins[0].float() - ins[2].float(), ins[3].float() - w_zero, None, a)
            if len(ins) > 8 and ins[8] is not None:
                acc = acc + ins[8].float().view(1, -1, 1, 1)
            ratio = (ins[1].float() * ins[4].float() / ins[6].float()).reshape(1, -1, 1, 1)
            return _saturate(acc * ratio, ins[7].float(), self._bounds(node, 7))
        if op.startswith("QLinear"):  # com.microsoft: dequantise, compute in float, quantise
            return self._qlinear(node, op, ins, a)
        return FLOAT_OPS[op](ins, a)

    def _qlinear(self, node: onnx.NodeProto, op: str, ins: list[Any], a: dict[str, Any]) -> Tensor:
        if op == "QLinearConcat":
            values = [_dq(ins[i], ins[i + 1], ins[i + 2]) for i in range(2, len(ins), 3)]
            return _fake(torch.cat(values, a["axis"]), ins[0], ins[1], self._bounds(node, 1), 1)
        if op in ("QLinearAdd", "QLinearMul"):
            x, y = _dq(ins[0], ins[1], ins[2]), _dq(ins[3], ins[4], ins[5])
            out = x + y if op == "QLinearAdd" else x * y
            return _fake(out, ins[6], ins[7], self._bounds(node, 7), 1)
        x = _dq(ins[0], ins[1], ins[2])
        out = torch.sigmoid(x) if op == "QLinearSigmoid" else F.leaky_relu(x, a.get("alpha", 0.01))
        return _fake(out, ins[3], ins[4], self._bounds(node, 4), 1)


def _resize(ins: list[Any], a: dict[str, Any]) -> Tensor:
    x, scales = ins[0], ins[2]
    mode = a.get("mode", "nearest")
    factors = [float(s) for s in scales[-2:]]
    if mode == "nearest":
        return F.interpolate(x, scale_factor=factors, mode="nearest")
    return F.interpolate(x, scale_factor=factors, mode="bilinear" if mode == "linear" else "bicubic",
                         align_corners=False)


def _depth_to_space(ins: list[Any], a: dict[str, Any]) -> Tensor:
    x, b = ins[0], a["blocksize"]
    n, c, h, w = x.shape
    if a.get("mode", "DCR") == "CRD":
        return F.pixel_shuffle(x, b)
    return x.view(n, b, b, c // b ** 2, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // b ** 2, h * b, w * b)


def _split(ins: list[Any], a: dict[str, Any]) -> tuple[Tensor, ...]:
    sizes = [int(v) for v in ins[1]] if len(ins) > 1 and ins[1] is not None else a["split"]
    return torch.split(ins[0], sizes, dim=a.get("axis", 0))


def _slice(ins: list[Any], a: dict[str, Any]) -> Tensor:
    x = ins[0]
    axes = [int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None else list(range(len(ins[1])))
    steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else [1] * len(axes)
    for ax, s, e, st in zip(axes, ins[1].tolist(), ins[2].tolist(), steps):
        keep = list(range(x.shape[ax]))[slice(int(s), int(max(min(e, 2 ** 62), -2 ** 62)), st)]  # any step sign
        x = torch.index_select(x, ax, torch.tensor(keep, dtype=torch.long))
    return x


def _pad(ins: list[Any], a: dict[str, Any]) -> Tensor:
    pads = [int(v) for v in ins[1]]
    n = len(pads) // 2
    torch_pads = [p for i in reversed(range(n)) for p in (pads[i], pads[n + i])]
    value = float(ins[2]) if len(ins) > 2 and ins[2] is not None else 0.0
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[a.get("mode", "constant")]
    return F.pad(ins[0], torch_pads, mode=mode, value=value) if mode == "constant" else F.pad(ins[0], torch_pads[:4], mode=mode)


FLOAT_OPS: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "Conv": lambda ins, a: _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a),
    "Relu": lambda ins, a: F.relu(ins[0]),
    "LeakyRelu": lambda ins, a: F.leaky_relu(ins[0], a.get("alpha", 0.01)),
    "PRelu": lambda ins, a: torch.where(ins[0] >= 0, ins[0], ins[0] * ins[1]),
    "Sigmoid": lambda ins, a: torch.sigmoid(ins[0]),
    "Add": lambda ins, a: ins[0] + ins[1],
    "Sub": lambda ins, a: ins[0] - ins[1],
    "Mul": lambda ins, a: ins[0] * ins[1],
    "Div": lambda ins, a: ins[0] / ins[1],
    "Pow": lambda ins, a: ins[0] ** ins[1],
    "Sqrt": lambda ins, a: torch.sqrt(ins[0].clamp_min(1e-12)) + (torch.sqrt(ins[0]) - torch.sqrt(ins[0].clamp_min(1e-12))).detach(),
    "Concat": lambda ins, a: torch.cat(ins, a["axis"]),
    "ReduceMean": lambda ins, a: ins[0].mean(dim=tuple(int(v) for v in (ins[1] if len(ins) > 1 else a["axes"])),
                                             keepdim=bool(a.get("keepdims", 1))),
    "DepthToSpace": _depth_to_space,
    "Resize": _resize,
    "Split": _split,
    "Slice": _slice,
    "Pad": _pad,
    "Transpose": lambda ins, a: ins[0].permute(*a["perm"]),
    "Reshape": lambda ins, a: ins[0].reshape([int(v) for v in ins[1]]),
    "Cast": lambda ins, a: ins[0].float() if a["to"] == onnx.TensorProto.FLOAT else ins[0],
    "Identity": lambda ins, a: ins[0],
    "Constant": lambda ins, a: torch.from_numpy(numpy_helper.to_array(a["value"]).copy()),
    "Shape": lambda ins, a: torch.tensor(ins[0].shape),
    "Gather": lambda ins, a: torch.index_select(ins[0], a.get("axis", 0), ins[1].reshape(-1)).reshape(
        ins[0].shape[:a.get("axis", 0)] + ins[1].shape + ins[0].shape[a.get("axis", 0) + 1:]),
    "Unsqueeze": lambda ins, a: ins[0].reshape(list(ins[0].shape[:int(ins[1][0])]) + [1] + list(ins[0].shape[int(ins[1][0]):])),
    "ConstantOfShape": lambda ins, a: torch.full([int(v) for v in ins[0]], float(numpy_helper.to_array(a["value"]).reshape(-1)[0])),
}


__all__ = ["Reference"]
