"""Graph repairs before conversion: what onnx2torch needs to see to convert a foreign graph."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper

from sreval.convert.registry import (
    DOMAIN, DOMAIN_VERSION, ONNX_DOMAINS, REPLACEMENTS, replaced_name, since_version, torch_domain)


def prepare_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A repaired copy of `model` that onnx2torch can convert; `model` is left untouched.

    Inlines model-local functions, maps the 'ai.onnx' domain alias to '', turns Constant
    tensors into initializers (converters such as Conv read weights only from initializers),
    bypasses Identity nodes on initializers (the legacy exporter's shared weights,
    `KeyError: 'add_mean.weight'`), spells out SAME auto_pad for stride-1 windows, and moves
    the nodes whose onnx2torch converter sreval replaces into sreval's domain (see
    `sreval.convert.registry`; shapes are inferred first, while every node is still standard).
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    if len(fixed.functions) > 0:
        fixed = onnx.inliner.inline_local_functions(fixed)
    _normalise_domains(fixed)
    graph = fixed.graph
    _constants_to_initializers(graph)
    bypass_initializer_identities(graph)
    _explicit_same_padding(graph)
    _fold_constant_dequantize(graph)
    return _move_replaced(_with_shapes(fixed))


def dotless_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Domains such as com.microsoft in their `torch_domain` spelling (no dots), as onnx2torch
    needs them to name modules; in place, the model returned."""
    for node in model.graph.node:
        node.domain = torch_domain(node.domain)
    for op in model.opset_import:
        op.domain = torch_domain(op.domain)
    return model


def _fold_constant_dequantize(graph: onnx.GraphProto) -> None:
    """DequantizeLinear of constant weights and biases becomes the float constant it computes
    (exactly: (q - zero) * scale in float64, rounded once), so that Conv and Gemm see
    initializer weights, as onnx2torch's converters need, and no step recomputes them."""
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        names = [n for n in node.input if n]
        if (node.op_type != "DequantizeLinear" or node.domain not in ("", "com.microsoft") or node.output[0] in outputs
                or not all(n in initializers for n in names) or _attribute(node, "block_size", 0)):
            kept.append(node)
            continue
        q, scale, *zero = (numpy_helper.to_array(initializers[n]) for n in names)
        axis = _attribute(node, "axis", 1) % max(q.ndim, 1)
        shape = [-1 if i == axis else 1 for i in range(q.ndim)] if scale.size > 1 else []
        value = q.astype(np.float64)
        if zero:
            value = value - zero[0].astype(np.float64).reshape(shape)
        value = (value * scale.astype(np.float64).reshape(shape)).astype(scale.dtype)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    _replace_nodes(graph, kept)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _normalise_domains(model: onnx.ModelProto) -> None:
    for node in model.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
    opsets = {op.domain or "": op.version for op in model.opset_import}
    if "ai.onnx" in opsets:
        version = max(opsets.pop("ai.onnx"), opsets.get("", 0))
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in {**opsets, "": version}.items())


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        tensor = _constant_tensor(node) if node.op_type == "Constant" and node.domain == "" else None
        if tensor is None or node.output[0] in outputs:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
    _replace_nodes(graph, kept)


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node makes, for the numeric forms; None for others (strings, sparse)."""
    attr = node.attribute[0] if len(node.attribute) == 1 else None
    if attr is None:
        return None
    if attr.name == "value" and attr.t.data_type != onnx.TensorProto.STRING:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
        return tensor
    makers: dict[str, Callable[[onnx.AttributeProto], np.ndarray]] = {
        "value_float": lambda a: np.array(a.f, dtype=np.float32),
        "value_floats": lambda a: np.array(list(a.floats), dtype=np.float32),
        "value_int": lambda a: np.array(a.i, dtype=np.int64),
        "value_ints": lambda a: np.array(list(a.ints), dtype=np.int64),
    }
    maker = makers.get(attr.name)
    return numpy_helper.from_array(maker(attr)) if maker else None


def bypass_initializer_identities(graph: onnx.GraphProto) -> None:
    """Consumers read an initializer directly where an Identity sat in between (the legacy
    exporter wraps shared or deduplicated initializers so; onnx2torch then fails and Table 1's
    node counts are noise). The exporters run this on every file they write."""
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:  # topological order, so chains of Identity resolve in one pass
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
        is_weight_copy = node.op_type == "Identity" and node.domain == "" and node.input[0] in initializers
        if is_weight_copy and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    _replace_nodes(graph, kept)
    if alias:
        info = [v for v in graph.value_info if v.name not in alias]
        del graph.value_info[:]
        graph.value_info.extend(info)


def _explicit_same_padding(graph: onnx.GraphProto) -> None:
    """SAME_UPPER/LOWER -> explicit pads (onnx2torch refuses auto_pad SAME)."""
    weight_shapes = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type in ("Conv", "MaxPool", "AveragePool") and node.domain == "":
            pads = _same_pads(node, weight_shapes)
            if pads is not None:
                kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
                del node.attribute[:]
                node.attribute.extend(kept + [onnx.helper.make_attribute("pads", pads)])


def _same_pads(node: onnx.NodeProto, weight_shapes: dict[str, list[int]]) -> list[int] | None:
    """Explicit pads for a SAME auto_pad window; None if not SAME or if they depend on the
    input size (stride > 1)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET").decode()
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    kernel = list(attrs.get("kernel_shape", []))
    if not kernel and len(node.input) > 1 and node.input[1] in weight_shapes:
        kernel = weight_shapes[node.input[1]][2:]  # Conv: from the weight's shape
    if not kernel or any(s != 1 for s in attrs.get("strides", [])):
        return None
    dilations = list(attrs.get("dilations", [1] * len(kernel)))
    totals = [d * (k - 1) for k, d in zip(kernel, dilations)]
    small = [t // 2 for t in totals]
    big = [t - s for t, s in zip(totals, small)]
    return small + big if auto_pad == "SAME_UPPER" else big + small


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    if len(nodes) == len(graph.node):
        return
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)



def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes (some converters read them); unchanged where onnx cannot
    infer them (a graph over 2 GiB, an op onnx does not know)."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - onnx2torch infers again and reports what fails
        return model


def _move_replaced(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes of a (operator, version) in REPLACEMENTS go to sreval's domain, named after the
    semantics they carry (`Resize_13`), where sreval's converter is registered."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
    moved = False
    for node in model.graph.node:
        if node.domain not in ONNX_DOMAINS:
            continue
        since = since_version(node.op_type, opset)
        if since is not None and (node.op_type, since) in REPLACEMENTS:
            node.domain, node.op_type = DOMAIN, replaced_name(node.op_type, since)
            moved = True
    if moved and all(o.domain != DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return model


__all__ = ["prepare_graph", "bypass_initializer_identities"]
