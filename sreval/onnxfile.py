"""Reading an ONNX file as data: parse and check it, resolve its external data (only beside
the file, never through a link), hash every byte it was read from (the model's identity), and
find its image input and what the graph says about its layout.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper

from sreval import memory
from sreval.errors import ConfigError, ModelError
from sreval.runtime import PROTO_LIMIT, first_line

# element types of an image input, as the names of `sreval.conventions.DTYPES`
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.UINT16: "uint16"}  # image inputs sreval feeds


def read_onnx(path: Path) -> tuple[onnx.ModelProto, str]:
    """Parse and check an ONNX file (and its external-data files, as torch's dynamo exporter
    writes them); returns the model and a SHA-256 over every byte it was read from."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"not a file: {path}")
    data = memory.read_limited(path, "model file")
    if not data:
        raise ModelError(f"{path.name}: empty file, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path.name}: not an ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path.name}: not an ONNX model (no graph nodes)")
    digest = hashlib.sha256(data)
    load_external_data(model, path, digest)
    try:
        if model.ByteSize() >= PROTO_LIMIT:  # protobuf cannot serialize it: onnx checks the file
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"{path.name}: invalid ONNX model: {first_line(e)}") from None
    return model, digest.hexdigest()


def load_external_data(model: onnx.ModelProto, path: Path, digest: Any) -> None:
    """The one resolver of external data, for every tensor of the model (initializers, sparse
    ones, TENSOR / TENSORS attributes, in subgraphs of If / Loop / Scan and in functions):
    each location relative to the model's own folder, no absolute path, no '..', no symbolic
    link on any component, a regular file, `offset` and `length` honoured. The bytes go into
    the tensor (the model is then self-contained) and into `digest`, with the location, so
    that editing a data file changes the model's identity."""
    external = 0
    for t in sorted(_tensors(model), key=lambda t: t.name):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        try:
            offset, length = int(info.get("offset", 0)), (int(info["length"]) if "length" in info else None)
        except ValueError:
            raise ModelError(f"{path.name}: tensor {t.name!r}: bad external data offset/length {info}") from None
        target = _external_file(path, location)
        try:
            with open(target, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                want = _declared_bytes(t)
                length = max(0, size - offset) if length is None else length
                if offset < 0 or offset + length > size or (want is not None and length != want):
                    raise ModelError(f"{path.name}: external data {location!r} holds {max(0, size - offset)} bytes at "
                                     f"offset {offset}, tensor {t.name!r} needs {length if want is None else want}")
                external += length
                memory.require(external, f"{path.name}: reading its external data")
                f.seek(offset)
                raw = f.read(length)
        except OSError as e:
            raise ModelError(f"{path.name}: cannot read external data {location!r}: {e.strerror or e}") from None
        if len(raw) != length:
            raise ModelError(f"{path.name}: external data {location!r} changed while it was read")
        digest.update(f"{location}\0{offset}\0{len(raw)}\0".encode())
        digest.update(raw)
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


_FOUR_BIT = {getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, name)}


def _declared_bytes(t: onnx.TensorProto) -> int | None:
    """The raw bytes a tensor of fixed-size elements declares (dims x element size); None for
    strings and unknown types."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if t.data_type == onnx.TensorProto.STRING or any(d < 0 for d in t.dims):
        return None
    n = math.prod(t.dims)
    if t.data_type in _FOUR_BIT:
        return (n + 1) // 2
    return n * itemsize


def _external_file(path: Path, location: str) -> Path:
    """An external-data file beside the model, refusing anything else: no absolute paths, no
    '..', no symbolic link on any component (a linked folder inside the location would lead
    out of the model's folder), a regular file (not /dev/zero, not a FIFO)."""
    rel = Path(location)
    bad = f"{path.name}: external data {location!r} is not a regular file beside the model"
    if not location or rel.is_absolute() or ".." in rel.parts:
        raise ModelError(bad)
    cur = path.parent
    for part in rel.parts:
        cur = cur / part
        if cur.is_symlink():
            raise ModelError(bad)
    if not cur.is_file():
        raise ModelError(bad)
    return cur


def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor the model holds, wherever it sits."""
    out: list[onnx.TensorProto] = []

    def graph(g: onnx.GraphProto) -> None:
        out.extend(g.initializer)
        for sp in g.sparse_initializer:
            out.extend((sp.values, sp.indices))
        nodes(g.node)

    def nodes(ns: Sequence[onnx.NodeProto]) -> None:
        for n in ns:
            for a in n.attribute:
                if a.HasField("t"):
                    out.append(a.t)
                out.extend(a.tensors)
                if a.HasField("sparse_tensor"):
                    out.extend((a.sparse_tensor.values, a.sparse_tensor.indices))
                if a.HasField("g"):
                    graph(a.g)
                for sub in a.graphs:
                    graph(sub)

    graph(model.graph)
    for fn in model.functions:
        nodes(fn.node)
    return out


def _free_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs without an initializer (one with an initializer has a default value)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _describe_input(vi: onnx.ValueInfoProto) -> str:
    t = vi.type.tensor_type
    kind = onnx.TensorProto.DataType.Name(t.elem_type).lower() if vi.type.HasField("tensor_type") else "non-tensor"
    shape = ["?" if d is None else d for d in dims(vi)] if vi.type.HasField("tensor_type") else []
    return f"{vi.name!r} ({kind}{' scalar' if not shape else f' {shape}'})"


def image_input(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    inputs = _free_inputs(model)
    images = [i for i in inputs if i.type.HasField("tensor_type") and len(i.type.tensor_type.shape.dim) == 4]
    if len(inputs) > 1 and len(images) == 1:
        others = [i for i in inputs if i is not images[0]]
        raise ModelError(f"{name}: besides the image input {images[0].name!r} the model takes "
                         f"{', '.join(_describe_input(i) for i in others)}: give "
                         f"{' '.join(f'--input-value {i.name}=VALUE' for i in others)}")
    if len(inputs) != 1:
        raise ModelError(f"{name}: not an SR model: expected one image input, found {len(inputs)}")
    inp = inputs[0]
    t = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or len(t.shape.dim) != 4:
        rank = len(t.shape.dim) if inp.type.HasField("tensor_type") else "non-tensor"
        raise ModelError(f"{name}: not an SR model: input {inp.name!r} is not an image of rank 4 or 3 (rank {rank})")
    if t.elem_type not in ONNX_DTYPES:
        raise ModelError(
            f"{name}: input {inp.name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(t.elem_type)}; float32, float16, uint8 or uint16 expected"
        )
    return inp


def bind_inputs(model: onnx.ModelProto, values: Mapping[str, str], name: str) -> onnx.ModelProto:
    """The model with each named non-image input fixed to a value (an initializer of the input's
    type and fixed shape), so that one image input remains: Real-CUGAN's `alpha`, a noise level.
    `values` maps input names to text ('0.5', '2'), parsed for the input's element type."""
    if not values:
        return model
    free = {i.name: i for i in _free_inputs(model)}
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for key, text in values.items():
        vi = free.get(key)
        if vi is None:
            raise ConfigError(f"{name}: --input-value {key}: no such input "
                              f"(inputs without a value: {', '.join(free) or 'none'})")
        bound.graph.initializer.append(_input_value(vi, text, name))
    keep = [i for i in bound.graph.input if i.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(keep)
    return bound


UPSCALES = {"bicubic": {"mode": "cubic", "cubic_coeff_a": -0.5}, "nearest": {"mode": "nearest"}}
UPSCALE_SCALES = (2, 3, 4, 8)


@dataclass(frozen=True)
class UpscaleInput:
    """A second image input fed the upscale of the first (the LR): `name`, `value` (a key of
    UPSCALES; bicubic is MATLAB's, which onnx Resize cubic a=-0.5 half_pixel computes for
    upscaling) and `scale`."""

    name: str
    lr: str
    value: str
    scale: int

    def describe(self) -> str:
        return f"input {self.name!r} is fed the {self.value} x{self.scale} upscale of the LR input {self.lr!r}"


def bind_upscale_input(model: onnx.ModelProto, name: str, given: Mapping[str, str]) -> tuple[onnx.ModelProto, UpscaleInput | None]:
    """A model with two image inputs, the second at `scale` times the first (the LR and its
    bicubic upscale, as some deployment zoos ship), made a one-input model: the upscale is
    computed in the graph from the LR (an onnx Resize), so every runtime feeds it alike and the
    attack differentiates through both paths. Which input is which and the scale come from
    `given` (NAME -> 'bicubic' | 'nearest') or from the one pairing that strict shape inference
    accepts at a concrete LR size. Returns the model unchanged (and None) for other models."""
    images = [i for i in _free_inputs(model) if _rank(i) == 4]
    if len(images) != 2 or len(_free_inputs(model)) != 2:
        return model, None
    named = [i for i in images if i.name in given]
    orders = [(images[1 - images.index(named[0])], named[0])] if named else [(images[0], images[1]), (images[1], images[0])]
    value = given[named[0].name] if named else "bicubic"
    fits = [(lr, up, s) for lr, up in orders for s in UPSCALE_SCALES if _infers(model, lr, up, s)]
    if len(fits) != 1:
        why = "no scale of 2, 3, 4 or 8 fits their shapes" if not fits else "several pairings fit their shapes"
        raise ModelError(f"{name}: two image inputs ({images[0].name!r}, {images[1].name!r}) and {why}: "
                         f"not an SR model sreval can feed")
    lr, up, scale = fits[0]
    return _with_upscale(model, lr, up, scale, value), UpscaleInput(up.name, lr.name, value, scale)


def _rank(vi: onnx.ValueInfoProto) -> int | None:
    return len(vi.type.tensor_type.shape.dim) if vi.type.HasField("tensor_type") else None


def _spatial(vi: onnx.ValueInfoProto) -> tuple[int, int]:
    """Where height and width are in an image input: NHWC when its last axis holds 1 or 3 channels."""
    return (1, 2) if dims(vi)[3] in (1, 3) and dims(vi)[1] not in (1, 3) else (2, 3)


def _infers(model: onnx.ModelProto, lr: onnx.ValueInfoProto, up: onnx.ValueInfoProto, scale: int) -> bool:
    """Strict shape inference passes with the LR at 8x8 and the other input at scale times that."""
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    for vi in trial.graph.input:
        if vi.name in (lr.name, up.name):
            side = 8 * (scale if vi.name == up.name else 1)
            for k in _spatial(vi):
                d = vi.type.tensor_type.shape.dim[k]
                d.ClearField("dim_param")
                d.dim_value = side
    try:
        onnx.shape_inference.infer_shapes(trial, strict_mode=True, data_prop=True)
    except Exception:  # onnx raises several types for inconsistent shapes
        return False
    return True


def _with_upscale(model: onnx.ModelProto, lr: onnx.ValueInfoProto, up: onnx.ValueInfoProto, scale: int,
                  value: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    if onnx_opset(out) < 11:
        raise ModelError("an upscale input needs opset 11 or later (onnx Resize with scales)")
    factors = [1.0] * 4
    for k in _spatial(up):
        factors[k] = float(scale)
    scales, roi = f"{up.name}__scales", f"{up.name}__roi"
    g.initializer.extend([onnx.numpy_helper.from_array(np.array(factors, np.float32), scales),
                          onnx.numpy_helper.from_array(np.zeros(0, np.float32), roi)])
    resize = onnx.helper.make_node("Resize", [lr.name, roi, scales], [up.name], name=f"{up.name}__upscale",
                                   coordinate_transformation_mode="half_pixel", **UPSCALES[value])
    keep = [i for i in g.input if i.name != up.name]
    del g.input[:]
    g.input.extend(keep)
    nodes = [resize, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return out


def add_batch_axis(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """A model whose one image input has no batch axis (rank 3: C,H,W or H,W,C), wrapped so
    that it takes a batch of one (an Unsqueeze-free Squeeze in front, an Unsqueeze behind each
    rank-3 output): everything after sees an ordinary 4-D model with a fixed batch of 1.
    Returns the model unchanged (and False) for any other input."""
    free = _free_inputs(model)
    if len(free) != 1 or not free[0].type.HasField("tensor_type") or len(free[0].type.tensor_type.shape.dim) != 3:
        return model, False
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    opset = onnx_opset(out)
    inp = next(i for i in g.input if i.name == free[0].name)
    batched = f"{inp.name}__batched"
    nodes = [_axis_node("Squeeze", batched, inp.name, opset, g)]
    for o in g.output:
        if o.type.HasField("tensor_type") and len(o.type.tensor_type.shape.dim) == 3:
            inner = f"{o.name}__unbatched"
            for n in g.node:
                n.output[:] = [inner if v == o.name else v for v in n.output]
                n.input[:] = [inner if v == o.name else v for v in n.input]
            nodes.append(_axis_node("Unsqueeze", inner, o.name, opset, g))
            _prepend_one(o)
    inp.name = batched
    _prepend_one(inp)
    new = [nodes[0], *g.node, *nodes[1:]]
    del g.node[:]
    g.node.extend(new)
    return out, True


def _axis_node(op: str, src: str, dst: str, opset: int, g: onnx.GraphProto) -> onnx.NodeProto:
    """`op` (Squeeze / Unsqueeze) on axis 0, in the form the opset takes (axes an input from 13)."""
    if opset < 13:
        return onnx.helper.make_node(op, [src], [dst], axes=[0])
    axes = f"{dst}__axes"
    g.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), axes))
    return onnx.helper.make_node(op, [src, axes], [dst])


def _prepend_one(vi: onnx.ValueInfoProto) -> None:
    shape = vi.type.tensor_type.shape
    old = [onnx.TensorShapeProto.Dimension() for _ in shape.dim]
    for d, src in zip(old, shape.dim):
        d.CopyFrom(src)
    del shape.dim[:]
    shape.dim.add().dim_value = 1
    shape.dim.extend(old)


def onnx_opset(model: onnx.ModelProto) -> int:
    """The version of the default (ai.onnx) operator set the model imports; 0 for none."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _input_value(vi: onnx.ValueInfoProto, text: str, name: str) -> onnx.TensorProto:
    if not vi.type.HasField("tensor_type"):
        raise ConfigError(f"{name}: input {vi.name!r} is not a tensor; it cannot be given a value")
    shape = dims(vi)
    if any(d is None for d in shape):
        raise ConfigError(f"{name}: input {vi.name!r} has a dynamic shape {['?' if d is None else d for d in shape]}: "
                          f"only an input of fixed shape can be given one value")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
    try:
        value = float(text) if np.dtype(dtype).kind == "f" else int(text)
    except ValueError:
        raise ConfigError(f"{name}: --input-value {vi.name}={text!r}: not a number of type {np.dtype(dtype)}") from None
    return onnx.numpy_helper.from_array(np.full(shape, value, dtype=dtype), vi.name)


def dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in vi.type.tensor_type.shape.dim]


def layout_from_graph(model: onnx.ModelProto, input_name: str) -> str | None:
    """NHWC when the image input goes straight into Transpose(perm 0,3,1,2), as TensorFlow
    exports do; NCHW when it goes straight into a Conv; None when the graph does not say."""
    for node in model.graph.node:
        if input_name not in node.input:
            continue
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == [0, 3, 1, 2]:
                return "nhwc"
        if node.op_type == "Conv" and node.input[0] == input_name:
            return "nchw"
    return None


_AFFINE = {"Mul", "Add", "Sub", "Div"}


def input_affine(model: onnx.ModelProto, input_name: str, channels: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """The per-channel maps a * x + b that the graph applies to its image input before anything
    else (a chain of Mul / Add / Sub / Div by constants, through Cast / Identity / Transpose /
    (Un)squeeze), one per prefix of the chain, in the input's channel order; empty where the
    input goes straight into other work. A graph whose first steps exactly undo a
    normalisation expects its input so normalised (the model's own steps may follow)."""
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    a, b = np.ones(channels), np.zeros(channels)
    name, maps = input_name, []
    while True:
        users = [n for n in model.graph.node if name in n.input]
        if len(users) != 1:
            break
        node = users[0]
        if node.op_type in ("Cast", "Identity", "Transpose", "Squeeze", "Unsqueeze"):
            name = node.output[0]
            continue
        other = [i for i in node.input if i != name]
        if node.op_type not in _AFFINE or len(other) != 1 or other[0] not in consts:
            break
        c = _per_channel(consts[other[0]], channels)
        if c is None or (node.op_type in ("Sub", "Div") and node.input[0] != name) or (node.op_type == "Div" and (c == 0).any()):
            break
        if node.op_type == "Mul":
            a, b = a * c, b * c
        elif node.op_type == "Div":
            a, b = a / c, b / c
        else:
            b = b + c if node.op_type == "Add" else b - c
        name = node.output[0]
        maps.append((a.copy(), b.copy()))
    return maps


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts one value per channel (or one for all) as `channels` values."""
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        return np.full(channels, float(c.reshape(-1)[0]))
    if c.size == channels and sorted(c.shape, reverse=True)[0] == channels:
        return c.reshape(-1)
    return None


QUANTISED_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv",
                           "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})


def _shape_values(model: onnx.ModelProto) -> set[str]:
    """Values computed from shapes and constants only (Shape, Size and what follows from them),
    not from any image data."""
    constant = {t.name for t in model.graph.initializer}
    out: set[str] = set()
    for n in model.graph.node:  # nodes are in topological order
        if n.op_type in ("Shape", "Size", "Constant") or (n.input and all(
                i in out or i in constant or not i for i in n.input) and any(i in out for i in n.input)):
            out.update(n.output)
    return out


def compute_precision(model: onnx.ModelProto) -> str:
    """The precision the graph computes in, whatever its I/O: 'int8' where it quantises, else
    'rounded' where it rounds (Round, Floor, Ceil, a cast to an 8- or 16-bit integer: a uint8
    image output), else 'fp16' / 'bf16' where it holds or casts to such tensors, else 'fp32'."""
    nodes = list(model.graph.node)
    if any(n.op_type in QUANTISED_OPS or n.op_type.startswith("QLinear") for n in nodes):
        return "int8"
    T = onnx.TensorProto
    small_ints = {T.UINT8, T.INT8, T.UINT16, T.INT16}
    shapes = _shape_values(model)  # Floor(h * 2) for a Resize size rounds no pixel
    if any(n.input and n.input[0] not in shapes and (n.op_type in ("Round", "Floor", "Ceil") or (
            n.op_type == "Cast" and any(a.name == "to" and a.i in small_ints for a in n.attribute))) for n in nodes):
        return "rounded"
    types = {t.data_type for t in model.graph.initializer}
    types |= {a.i for n in nodes if n.op_type == "Cast" for a in n.attribute if a.name == "to"}
    types |= {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    return "fp16" if T.FLOAT16 in types else "bf16" if T.BFLOAT16 in types else "fp32"


def layout_channels(dims: list[int | None], layout: str) -> int | None:
    return dims[1] if layout == "nchw" else dims[3]


__all__ = ["read_onnx", "load_external_data", "image_input", "bind_inputs", "add_batch_axis", "onnx_opset", "dims", "layout_from_graph", "layout_channels",
           "ONNX_DTYPES", "compute_precision", "QUANTISED_OPS", "UPSCALES", "UpscaleInput", "bind_upscale_input", "input_affine"]
