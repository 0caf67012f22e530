"""Make foreign ONNX graphs convertible by onnx2torch, with onnxruntime's numbers.

onnx2torch 1.5.15 knows operators up to about opset 17, and a few of the ones it knows give
numbers that differ from onnxruntime (it only warns, or not even that). This package

* adds converters for newer operator versions, one module per operator family (resize,
  layout, pad, reduce, split, slice, reshape, norm, pool, activation, clip, sample, scatter). Where a new version
  only widened the type list, onnx2torch's own converter is registered again under it
  (`registry.SAME_AS`);
* converts deployed graphs: quantised operators as fake quantisation (`quant`), onnxruntime's
  contrib operators from its graph optimiser (`contrib`, `nchwc`), and rounding and integer
  casts with straight-through gradients (`rounding`);
* replaces the converters that are wrong or refuse common input, listed with the reason in
  `registry.REPLACEMENTS`;
* repairs graph quirks before conversion (`graph.prepare_graph`).

Everything goes through onnx2torch's public `add_converter`, at import of this package.
"""

from __future__ import annotations

import onnx
import onnx.inliner
import torch
from onnx2torch import convert as _onnx2torch_convert
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph

# importing the operator modules registers their converters
from sreval.convert import (  # noqa: F401
    activation, clip, contrib, layout, nchwc, norm, pad, pool, quant, reduce, reshape, resize, rounding, sample,
    scatter, slice, split)
from sreval.convert.graph import bypass_initializer_identities, dotless_domains, prepare_graph
from sreval.convert.quant import INT_RANGES
from sreval.convert.rounding import STRAIGHT_THROUGH
from sreval.convert.registry import DOMAIN, ONNX_DOMAINS, REPLACEMENTS, torch_domain
from sreval.errors import ModelError, UnsupportedOperatorError

OPERATOR_MODULES = (activation, clip, contrib, layout, nchwc, norm, pad, pool, quant, reduce, reshape, resize,
                    rounding, sample, scatter, slice, split)


def _opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    versions = {op.domain or "": op.version for op in model.opset_import}
    if "ai.onnx" in versions:
        versions[""] = max(versions.pop("ai.onnx"), versions.get("", 0))
    return versions


def _label(operation: str, domain: str, version: int | None) -> str:
    if domain == DOMAIN:  # a replaced node: its own name says operator and version
        return operation.replace("_", "-")
    name = operation if domain in ONNX_DOMAINS else f"{domain}.{operation}"
    return f"{name}-{version if version is not None else '?'}"


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Operators without a converter, as 'Op-opset', sorted. Model-local functions are looked
    into, since to_torch inlines them (every replaced operator version also has onnx2torch's
    converter, so the replacements change nothing here)."""
    if len(model.functions) > 0:
        model = onnx.inliner.inline_local_functions(model)
    return _missing_converters(model)


def _missing_converters(model: onnx.ModelProto) -> list[str]:
    versions = _opset_versions(model)
    missing = set()
    for node in model.graph.node:
        domain = "" if node.domain in ONNX_DOMAINS else node.domain
        version = versions.get(domain)
        try:
            if version is None:
                raise NotImplementedError("no opset for this domain")
            get_converter(operation_type=node.op_type, version=version, domain=torch_domain(domain))
        except NotImplementedError:
            missing.add(_label(node.op_type, domain, version))
    return sorted(missing)


def straight_through_ops(model: onnx.ModelProto) -> list[str]:
    """The graph's operators whose converted gradient is straight-through (rounding,
    quantisation, integer casts: `sreval.convert.rounding`), sorted."""
    found = {n.op_type for n in model.graph.node if n.op_type in STRAIGHT_THROUGH or n.op_type.startswith("QLinear")}
    found -= {"Cast"} - {n.op_type for n in model.graph.node if n.op_type == "Cast" and any(
        a.name == "to" and a.i in INT_RANGES for a in n.attribute)}
    return sorted(found)


def to_torch(model: onnx.ModelProto) -> torch.nn.Module:
    """Convert an ONNX model to a torch module (eval mode); the caller freezes parameters.

    Raises UnsupportedOperatorError naming each operator without a converter, and
    ModelError, naming the node when it can, for every other conversion failure.
    """
    try:
        prepared = prepare_graph(model)
    except Exception as exc:  # onnx raises many types for malformed graphs
        raise ModelError(f"cannot prepare the ONNX graph for conversion: {exc}") from exc
    missing = _missing_converters(prepared)
    if missing:
        raise UnsupportedOperatorError(missing)
    try:
        module = _onnx2torch_convert(dotless_domains(prepared))
    except Exception as exc:  # onnx2torch's converters raise arbitrary types (KeyError, ...)
        raise ModelError(f"onnx2torch cannot convert the model: {_describe_failure(prepared, exc)}") from exc
    return module.eval()


def _describe_failure(model: onnx.ModelProto, exc: Exception) -> str:
    """Name the node whose converter fails, by re-running converters one by one."""
    fallback = f"{type(exc).__name__}: {exc}"
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        graph = OnnxGraph(inferred.graph)
    except Exception:  # the original error is the useful one then
        return fallback
    versions = _opset_versions(inferred)
    for node in graph.nodes.values():
        version = versions.get(node.domain or "", 0)
        try:
            get_converter(node.operation_type, version, torch_domain(node.domain or ""))(node, graph)
        except Exception as node_exc:  # report whichever converter fails first
            label = _label(node.operation_type, node.domain, version)
            return f"node {node.name or node.unique_name!r} ({label}): {type(node_exc).__name__}: {node_exc}"
    return fallback


__all__ = ["to_torch", "unsupported_ops", "straight_through_ops", "prepare_graph", "bypass_initializer_identities", "REPLACEMENTS",
           "OPERATOR_MODULES"]
