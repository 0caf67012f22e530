"""How sreval's converters reach onnx2torch: through its public `add_converter` only.

* Additions (operator versions onnx2torch has no converter for) are registered under the ONNX
  domain, and never shadow one of onnx2torch's.
* Replacements (versions where onnx2torch's converter gives other numbers than onnxruntime, or
  refuses common input) cannot take the same key, so `prepare_graph` moves each such node into
  sreval's own domain under the name `<Op>_<since version>` (the ONNX semantics it carries),
  where our converter is registered. `REPLACEMENTS` is the one table of them, with the reason.
* Aliases: versions that only widened (or, for the old ones, narrowed) the type list get
  onnx2torch's own converter of an earlier version, registered again as an addition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx import defs
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, get_const_value, onnx_mapping_from_node

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]

DOMAIN = "sreval"  # where replaced nodes go
CONVERTERS: list[tuple[str, int]] = []  # (operator, since version) of every converter sreval registered
DOMAIN_VERSION = 1
ONNX_DOMAINS = ("", "ai.onnx")
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib operators (its optimiser and quantiser write them)
NCHWC_DOMAIN = "com.microsoft.nchwc"  # onnxruntime's blocked-layout CPU operators (optimisation level ALL)

# (operator, since version) -> why onnx2torch's converter is replaced
REPLACEMENTS: dict[tuple[str, int], str] = {
    ("Resize", 10): "onnx2torch computes half_pixel coordinates; Resize-10 is asymmetric",
    ("Resize", 11): "onnx2torch is right only for half_pixel/align_corners linear and cubic with a = -0.75; "
                    "other modes give other numbers, with only a warning",
    ("Resize", 13): "as Resize-11",
    ("DepthToSpace", 11): "onnx2torch implements CRD only; DCR (the default, TensorFlow's) comes out scrambled",
    ("DepthToSpace", 13): "as DepthToSpace-11",
    ("PRelu", 7): "onnx2torch takes a [K] slope as per-channel when K equals the channel count; ONNX "
                  "broadcasts it on the last axis",
    ("PRelu", 9): "as PRelu-7",
    ("PRelu", 16): "as PRelu-7",
    ("Reshape", 14): "onnx2torch refuses allowzero=1, which torch's dynamo exporter always sets",
    ("LayerNormalization", 17): "onnx2torch reads normalized_shape from inferred shapes, which are 0 for "
                                "dynamic dims",
    ("Clip", 11): "onnx2torch refuses a min or max that is computed or left empty ('Dynamic value of min/max "
                  "is not implemented'); TorchScript writes Clip(x, min, '') for clamp_min, as in F.normalize",
    ("Clip", 12): "as Clip-11",
    ("Clip", 13): "as Clip-11",
    ("ScatterND", 11): "onnx2torch indexes with a list of index lists (deprecated by torch: an error or another "
                       "result to come), refuses reductions and fails on zero-element data (reshape to "
                       "[-1, 0, ...]), which the dynamo export of a shifted-window mask writes",
    ("ScatterND", 13): "as ScatterND-11",
    ("ScatterND", 16): "as ScatterND-11",
    ("Slice", 10): "onnx2torch indexes with a list of slices, which torch deprecates",
    ("Slice", 11): "as Slice-10",
    ("Slice", 13): "as Slice-10",
    ("Round", 11): "torch.round has a zero gradient: a graph that rounds its output would block every gradient "
                   "attack; sreval's converter is straight-through (sreval.convert.rounding)",
    ("Floor", 6): "as Round-11", ("Floor", 13): "as Round-11", ("Ceil", 6): "as Round-11", ("Ceil", 13): "as Round-11",
    ("Cast", 9): "a cast to uint8/int8/uint16/int16 (uint8 image output) has no gradient in torch, and wraps "
                 "out-of-range values; sreval's keeps a float holding the saturated integers, straight-through",
    ("Cast", 13): "as Cast-9",
    ("Sqrt", 6): "torch.sqrt's gradient at 0 is infinite: a quantised variance is often exactly 0 and the input "
                 "gradient turns NaN; sreval's is 0 below 1e-12 (sreval.convert.rounding)",
    ("Sqrt", 13): "as Sqrt-6",
}


def torch_domain(domain: str) -> str:
    """The domain under which a converter is registered and looked up: onnx2torch names each
    module after its node's domain, and torch refuses dots in module names."""
    return domain.replace(".", "_")


def replaced_name(operation: str, since: int) -> str:
    return f"{operation}_{since}"


def has_converter(operation: str, version: int, domain: str = "") -> bool:
    try:
        get_converter(operation_type=operation, version=version, domain=domain)
    except NotImplementedError:
        return False
    return True


def converter(operation: str, versions: tuple[int, ...], domain: str = "") -> Callable[[Converter], Converter]:
    """Register the decorated converter for `operation` at `versions` (since versions) of
    `domain` (ONNX's by default): as a replacement where `REPLACEMENTS` lists the version, else
    as an addition (never over an existing converter)."""

    def deco(fn: Converter) -> Converter:
        for version in versions:
            if not domain and (operation, version) in REPLACEMENTS:
                key = (replaced_name(operation, version), DOMAIN_VERSION, DOMAIN)
            else:
                key = (operation, version, torch_domain(domain))
            if not has_converter(*key):  # idempotent: a module imported again (reload) adds nothing
                add_converter(*key)(fn)
                CONVERTERS.append((f"{domain}.{operation}" if domain else operation, version))
        return fn

    return deco


def simple(make: Callable[[OnnxNode], torch.nn.Module]) -> Converter:
    """A converter whose module depends on the node only, fed the node's inputs as they are."""
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        del graph
        return OperationConverterResult(make(node), onnx_mapping_from_node(node))
    return convert


def since_version(operation: str, opset: int) -> int | None:
    """The version of an ONNX operator that a model of this opset uses (None: unknown op)."""
    try:
        return int(defs.get_schema(operation, max_inclusive_version=opset, domain="").since_version)
    except (RuntimeError, defs.SchemaError):
        return None


def constant_ints(name: str, graph: OnnxGraph) -> list[int] | None:
    """The value of an initializer/Constant input as ints; None if computed at run time."""
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


# Versions that only widened the type list (bfloat16, float8, int4, ...) or, for the old
# ones, narrowed it: onnx2torch's converter for `base` computes the same thing.
SAME_AS: dict[str, tuple[int, tuple[int, ...]]] = {
    "Acos": (7, (22,)), "Asin": (7, (22,)), "Atan": (7, (22,)),
    "Cos": (7, (22,)), "Sin": (7, (22,)), "Tan": (7, (22,)),
    "Celu": (12, (28,)),
    "Constant": (13, (19, 21, 23, 24, 25)),
    "ConstantOfShape": (9, (20, 21, 23, 24, 25)),
    "Conv": (11, (22,)), "ConvTranspose": (11, (22,)),
    "Dropout": (13, (22,)),
    "Einsum": (12, (28,)),
    "Elu": (6, (22,)), "HardSigmoid": (6, (22,)), "Selu": (6, (22,)),
    "HardSwish": (14, (22,)), "Softplus": (1, (22,)), "Softsign": (1, (22,)),
    "Equal": (13, (19,)), "GreaterOrEqual": (12, (16,)), "LessOrEqual": (12, (16,)),
    "EyeLike": (9, (22,)),
    "Flatten": (13, (21, 23, 24, 25)),
    "GlobalAveragePool": (1, (22,)),
    "Identity": (16, (19, 21, 23, 24, 25)),
    "InstanceNormalization": (6, (22,)),
    "IsInf": (10, (20,)), "IsNaN": (13, (20,)),
    "MaxPool": (12, (22,)),
    "Mod": (13, (28,)),
    "Range": (11, (27,)),  # stash_type only matters for float16 inputs
    "Shape": (15, (19, 21, 23, 24, 25)),
    "Squeeze": (21, (23, 24, 25)),
    "TopK": (11, (24,)),
    "Transpose": (13, (21, 23, 24, 25)),
    "Unsqueeze": (13, (21, 23, 24, 25)),
}
# Opset <= 8 versions (old exports, opset 7-9) with the same meaning as a newer converter.
OLD_SAME_AS: dict[str, tuple[int, tuple[int, ...]]] = {
    "Constant": (9, (1,)), "Dropout": (10, (7,)), "Flatten": (9, (1,)),
    "Gemm": (9, (7,)), "MaxPool": (8, (1,)), "IsNaN": (13, (9,)),
    "Max": (8, (6,)), "Min": (8, (6,)), "Mean": (8, (6,)), "Sum": (8, (6,)),
}



def _register_aliases() -> None:
    for table in (SAME_AS, OLD_SAME_AS):
        for operation, (base, versions) in table.items():
            converter(operation, versions)(get_converter(operation, base))


_register_aliases()

__all__ = ["DOMAIN", "MS_DOMAIN", "NCHWC_DOMAIN", "REPLACEMENTS", "CONVERTERS", "SAME_AS", "OLD_SAME_AS", "converter", "simple", "replaced_name", "torch_domain", "has_converter",
           "since_version", "constant_ints", "Converter"]
