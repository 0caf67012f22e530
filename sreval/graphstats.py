"""Table 1 statistics (parameters, convolutional layers) read off an ONNX graph.

Counting rule, worked out so that the exported x4 graph of every paper model reproduces Table 1
of Choi et al. (ICCV 2019) exactly:

- conv_layers = the number of Conv and ConvTranspose nodes, i.e. the convolutions executed on
  the x4 path. A block whose weights are shared counts at each use (each use is its own node:
  CARN-M's shared residual block counts 3x per cascading block); RCAN's channel-attention 1x1
  convolutions count; mean-shift layers do not (our exporters implement them as Mul/Add, not
  as the official frozen 1x1 Conv). EDSR 69, EDSR-baseline 37, RCAN 815, 4PP-EUSR 95,
  ESRGAN/RRDB 351, CARN 34, CARN-M 43.
- params = the values of the float initializers (and Constant-node tensors) consumed as weights
  by Conv, ConvTranspose, Gemm, MatMul and PRelu, biases included, each distinct tensor once
  (shared weights count once), looking through the Identity/Cast nodes exporters put between an
  initializer and its consumer. Elementwise constants (mean shift, residual scaling, range
  adapter) are not parameters. This is the x4 path's weight count: EDSR 43,089,923,
  EDSR-baseline 1,517,571, RCAN 15,592,355, ESRGAN/RRDB 16,697,987, CARN 1,111,875,
  CARN-M 294,147, 4PP-EUSR 3,699,971.
- For 4PP-EUSR the paper's 6.3M is the whole multi-scale EUSR generator (6,295,689: shared trunk
  plus x2/x4/x8 branches), which no single-scale graph contains; exporters record that
  checkpoint count separately (`sreval.params_checkpoint`). Likewise multi-scale CARN/CARN-M
  checkpoints hold unused x2/x3 upsamplers that the x4 graph (and Table 1) leaves out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx
from onnx import TensorProto

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"})
PASS_THROUGH_OPS = frozenset({"Identity", "Cast"})
FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
)


@dataclass(frozen=True)
class GraphStats:
    params: int
    conv_layers: int

    @property
    def params_millions(self) -> str:
        """As Table 1 prints it (one decimal, e.g. '43.1M')."""
        return f"{self.params / 1e6:.1f}M"


def graph_stats(model: onnx.ModelProto) -> GraphStats:
    """Parameters and conv layers of `model` by the Table 1 rule (module docstring)."""
    graphs = list(_graphs(model.graph))
    constants = _float_constants(graphs)
    producers = {out: node for g in graphs for node in g.node for out in node.output}
    weights: dict[str, int] = {}
    conv_layers = 0
    for g in graphs:
        for node in g.node:
            conv_layers += node.op_type in CONV_OPS
            if node.op_type not in WEIGHT_OPS:
                continue
            # Conv/ConvTranspose/PRelu: input 0 is the data; Gemm/MatMul: any side may be weights
            first = 1 if node.op_type in ("Conv", "ConvTranspose", "PRelu") else 0
            for name in node.input[first:]:
                source = _resolve(name, producers)
                if source in constants:
                    weights[source] = constants[source]
    return GraphStats(params=sum(weights.values()), conv_layers=conv_layers)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and all its subgraphs (If/Loop bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _float_constants(graphs: list[onnx.GraphProto]) -> dict[str, int]:
    """Name -> value count of every float initializer and Constant-node tensor."""
    found: dict[str, int] = {}
    for g in graphs:
        for t in g.initializer:
            if t.data_type in FLOAT_TYPES:
                found[t.name] = _numel(t)
        for node in g.node:
            if node.op_type != "Constant":
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in FLOAT_TYPES:
                    found[node.output[0]] = _numel(attr.t)
    return found


def _numel(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def _resolve(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """Follow Identity/Cast back to the tensor they pass on."""
    seen: set[str] = set()
    while name in producers and producers[name].op_type in PASS_THROUGH_OPS and name not in seen:
        seen.add(name)
        name = producers[name].input[0]
    return name


__all__ = ["GraphStats", "graph_stats"]
