"""sreval.convert: every added converter against onnxruntime, then whole exported SR models.

One-node graphs in onnx2torch's own test style: build the node with onnx.helper at the opset
under test, run it in onnxruntime and through `to_torch`, compare.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, defs, helper, numpy_helper
from onnx2torch.node_converters import registry
from torch import nn

from sreval.convert import prepare_graph, to_torch, unsupported_ops
from sreval.convert import contrib, quant
from sreval.convert.registry import CONVERTERS, DOMAIN, OLD_SAME_AS, REPLACEMENTS, SAME_AS, replaced_name
from sreval.errors import ModelError, UnsupportedOperatorError

TOL = 1e-5
RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _reseed() -> None:
    """Same data for a test whether it runs alone or in the suite."""
    global RNG  # pylint: disable=global-statement
    RNG = np.random.default_rng(1234)


def _rand(*shape: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray],
    outputs: Sequence[str],
    opset: int,
    domains: dict[str, int] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "one_node",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
            for name, value in inputs.items()
        ],
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    return helper.make_model(graph, opset_imports=opsets)


def _ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # deprecation warnings for old modes are expected here
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def _torch(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    module = to_torch(model)
    with torch.no_grad():
        result = module(*[torch.from_numpy(v) for v in inputs.values()])
    results = result if isinstance(result, (list, tuple)) else [result]
    return [r.numpy() if isinstance(r, torch.Tensor) else np.asarray(r) for r in results]


def _assert_parity(
    model: onnx.ModelProto, inputs: dict[str, np.ndarray], tol: float = TOL, rtol: float = 1e-6
) -> None:
    expected, actual = _ort(model, inputs), _torch(model, inputs)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.shape == want.shape
        if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=tol)


def _check_node(
    op: str,
    inputs: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 18,
    n_outputs: int = 1,
    input_names: Sequence[str] | None = None,
    tol: float = TOL,
    rtol: float = 1e-6,
    **attrs: Any,
) -> None:
    initializers = initializers or {}
    names = list(input_names) if input_names is not None else [*inputs, *initializers]
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outputs, **attrs)
    _assert_parity(_model([node], inputs, initializers, outputs, opset), inputs, tol, rtol)


# ------------------------------------------------------------------------- DepthToSpace


@pytest.mark.parametrize(("mode", "opset"), [("", 7), *[(m, v) for m in ("DCR", "CRD") for v in (11, 13, 28)]])
def test_depth_to_space(mode: str, opset: int) -> None:
    attrs = {"mode": mode} if mode else {}  # DepthToSpace-1 has no mode: always DCR
    _check_node("DepthToSpace", {"x": _rand(2, 12, 3, 5)}, opset=opset, blocksize=2, **attrs)


def test_depth_to_space_dcr_is_not_pixel_shuffle() -> None:
    """Guards the reason for the converter: DCR differs from torch's (CRD) pixel_shuffle."""
    x = _rand(1, 8, 2, 2)
    node = helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="DCR")
    (expected,) = _ort(_model([node], {"x": x}, {}, ["y"], 13), {"x": x})
    assert np.abs(F.pixel_shuffle(torch.from_numpy(x), 2).numpy() - expected).max() > 0.1


@pytest.mark.parametrize("opset", [7, 13])
def test_space_to_depth(opset: int) -> None:
    _check_node("SpaceToDepth", {"x": _rand(2, 3, 4, 6)}, opset=opset, blocksize=2)


# ------------------------------------------------------------------------------ Resize

_CTMS_13 = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize",
            "tf_half_pixel_for_nn"]
_CTMS_19 = [*_CTMS_13[:-1], "half_pixel_symmetric"]
_TARGETS = {
    "x2": ("scales", [1, 1, 2, 2]),
    "x4": ("scales", [1, 1, 4, 4]),
    "odd": ("scales", [1, 1, 1.5, 0.7]),  # non-integer, one axis down
    "down": ("scales", [1, 1, 0.5, 0.25]),
    "sizes": ("sizes", [2, 3, 11, 5]),
}
_ROI = np.array([0, 0, 0.1, -0.2, 1, 1, 0.8, 1.3], np.float32)


def _resize_cases() -> list[Any]:
    cases = []
    for opset, ctms in ((13, _CTMS_13), (19, _CTMS_19)):
        for mode in ("nearest", "linear", "cubic"):
            for ctm in ctms:
                if ctm == "tf_half_pixel_for_nn" and mode != "nearest":
                    continue
                for target in _TARGETS:
                    # rounding modes differ where source positions fall between pixels
                    nearest_modes = ["round_prefer_floor"]
                    if target in ("odd", "down"):
                        nearest_modes += ["round_prefer_ceil", "floor", "ceil"]
                    for nearest in nearest_modes if mode == "nearest" else [""]:
                        case_id = f"{opset}-{mode}-{ctm}-{target}" + (f"-{nearest}" if nearest else "")
                        cases.append(pytest.param(opset, mode, ctm, target, nearest, id=case_id))
    return cases


def _resize_inputs(target: str, ctm: str, opset: int) -> tuple[list[str], dict[str, np.ndarray]]:
    kind, values = _TARGETS[target]
    initializers: dict[str, np.ndarray] = {}
    names = ["x", "", "", ""]
    if ctm == "tf_crop_and_resize":
        initializers["roi"], names[1] = _ROI, "roi"
    elif opset == 11:  # roi is not optional in Resize-11
        initializers["roi"], names[1] = np.zeros(0, np.float32), "roi"
    if kind == "scales":
        initializers["scales"], names[2] = np.array(values, np.float32), "scales"
        names = names[:3]
    else:
        initializers["sizes"], names[3] = np.array(values, np.int64), "sizes"
        if opset == 11:  # nor is scales
            initializers["scales"], names[2] = np.zeros(0, np.float32), "scales"
    return names, initializers


@pytest.mark.parametrize(("opset", "mode", "ctm", "target", "nearest"), _resize_cases())
def test_resize_modes(opset: int, mode: str, ctm: str, target: str, nearest: str) -> None:
    names, initializers = _resize_inputs(target, ctm, opset)
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": ctm, "extrapolation_value": -1.0}
    if nearest:
        attrs["nearest_mode"] = nearest
    _check_node("Resize", {"x": _rand(2, 3, 7, 9)}, initializers, opset=opset, input_names=names, **attrs)


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("target", ["x2", "odd", "down", "sizes"])
@pytest.mark.parametrize(
    "extra", [{"cubic_coeff_a": -0.5}, {"exclude_outside": 1}, {"cubic_coeff_a": -0.5, "exclude_outside": 1}]
)
def test_resize_cubic_variants(opset: int, target: str, extra: dict[str, Any]) -> None:
    """cubic_coeff_a = -0.5 (TensorFlow graphs) and exclude_outside: onnx2torch only warned."""
    names, initializers = _resize_inputs(target, "half_pixel", opset)
    _check_node("Resize", {"x": _rand(2, 3, 7, 9)}, initializers, opset=opset, input_names=names, mode="cubic",
                **extra)


@pytest.mark.parametrize("opset", [18, 19])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("target", ["down", "odd", "x2", "sizes"])
@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_resize_antialias(opset: int, mode: str, target: str, exclude_outside: int) -> None:
    names, initializers = _resize_inputs(target, "half_pixel", opset)
    _check_node("Resize", {"x": _rand(2, 3, 13, 17)}, initializers, opset=opset, input_names=names,
                mode=mode, antialias=1, exclude_outside=exclude_outside)


@pytest.mark.parametrize("opset", [18, 19])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_axes_attribute(opset: int, mode: str) -> None:
    x = _rand(1, 2, 7, 9)
    _check_node("Resize", {"x": x}, {"scales": np.array([2.0, 1.5], np.float32)}, opset=opset,
                input_names=["x", "", "scales"], mode=mode, axes=[2, 3])
    _check_node("Resize", {"x": x}, {"sizes": np.array([4], np.int64)}, opset=opset,
                input_names=["x", "", "", "sizes"], mode=mode, axes=[3])


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_keep_aspect_ratio(policy: str, mode: str) -> None:
    _check_node("Resize", {"x": _rand(1, 2, 7, 9)}, {"sizes": np.array([15, 12], np.int64)}, opset=18,
                input_names=["x", "", "", "sizes"], mode=mode, keep_aspect_ratio_policy=policy, axes=[2, 3])


def test_resize_dynamic_sizes() -> None:
    """Sizes computed in the graph (F.interpolate(size=other.shape[-2:]) exports)."""
    x, ref = _rand(1, 3, 5, 6), _rand(1, 1, 11, 13)
    nodes = [
        helper.make_node("Shape", ["ref"], ["sizes"]),
        helper.make_node("Shape", ["x"], ["xs"], end=2),
        helper.make_node("Shape", ["ref"], ["hw"], start=2),
        helper.make_node("Concat", ["xs", "hw"], ["target"], axis=0),
        helper.make_node("Resize", ["x", "", "", "target"], ["y"], mode="linear"),
    ]
    _assert_parity(_model(nodes, {"x": x, "ref": ref}, {}, ["y"], 18), {"x": x, "ref": ref})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 3, 1.5], [1, 1, 0.5, 0.6]])
def test_resize_10(mode: str, scales: list[float]) -> None:
    """Resize-10: asymmetric coordinates; onnx2torch used half_pixel for linear."""
    if mode == "linear" and min(scales) < 1:
        scales = [1, 1, 1.25, 2]
    _check_node("Resize", {"x": _rand(1, 2, 7, 9)}, {"s": np.array(scales, np.float32)}, opset=10, mode=mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(mode: str, opset: int) -> None:
    scales = [1.0, 1.0, 2.0, 3.0] if mode == "nearest" else [1.0, 1.0, 2.0, 1.5]
    x = {"x": _rand(1, 2, 4, 5)}
    if opset == 7:
        _check_node("Upsample", x, opset=opset, mode=mode, scales=scales)
    else:
        _check_node("Upsample", x, {"s": np.array(scales, np.float32)}, opset=opset, mode=mode)


def test_resize_nearest_with_antialias_is_refused() -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", antialias=1)
    model = _model([node], {"x": _rand(1, 1, 4, 4)}, {"s": np.array([1, 1, 0.5, 0.5], np.float32)}, ["y"], 18)
    with pytest.raises(ModelError, match="antialias"):
        to_torch(model)


def test_onnx2torch_resize_was_silently_wrong() -> None:
    """Why Resize is replaced: onnx2torch's module (what its converter builds for asymmetric
    linear, with only a warning) differs from onnxruntime by a lot."""
    from onnx2torch.node_converters.resize import OnnxResize

    x = _rand(1, 2, 7, 9)
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", coordinate_transformation_mode="asymmetric")
    model = _model([node], {"x": x}, {"s": np.array([1, 1, 2, 2], np.float32)}, ["y"], 13)
    (expected,) = _ort(model, {"x": x})
    legacy = OnnxResize(mode="linear", align_corners=False, ignore_roi=True)
    got = legacy(torch.from_numpy(x), scales=torch.tensor([1.0, 1.0, 2.0, 2.0])).numpy()
    assert np.abs(got - expected).max() > 0.05


# --------------------------------------------------------------------------------- Pad


_PAD_OPSETS = [11, 13, 18, 19, 21, 23, 24, 25]


@pytest.mark.parametrize(
    ("mode", "opset"),
    [(m, v) for m in ("constant", "reflect", "edge") for v in _PAD_OPSETS]
    + [("wrap", v) for v in _PAD_OPSETS if v >= 19],  # wrap arrived in Pad-19
)
def test_pad_modes(mode: str, opset: int) -> None:
    x = _rand(2, 3, 5, 6)
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 3], np.int64)
    initializers = {"pads": pads}
    if mode == "constant":
        initializers["value"] = np.array(0.5, np.float32)
    _check_node("Pad", {"x": x}, initializers, opset=opset, mode=mode)


@pytest.mark.parametrize("opset", [18, 19, 21])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("axes", [[2, 3], [-1], [3, 1]])
def test_pad_axes_input(mode: str, opset: int, axes: list[int]) -> None:
    pads = np.array([1, 2] * len(axes), np.int64)
    names = ["x", "pads", "", "axes"]
    _check_node("Pad", {"x": _rand(1, 3, 4, 5)}, {"pads": pads, "axes": np.array(axes, np.int64)},
                opset=opset, input_names=names, mode=mode)


@pytest.mark.parametrize("mode", ["constant", "edge"])
def test_pad_negative_pads_crop(mode: str) -> None:
    pads = np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64)
    _check_node("Pad", {"x": _rand(1, 2, 5, 6)}, {"pads": pads}, opset=18, mode=mode)


# ------------------------------------------------------------------------------- Split


@pytest.mark.parametrize("split", [[2, 3, 2], [1, 6]])
def test_split_18_split_input(split: list[int]) -> None:
    _check_node("Split", {"x": _rand(2, 7, 3)}, {"split": np.array(split, np.int64)}, opset=18,
                n_outputs=len(split), axis=1)


@pytest.mark.parametrize(("length", "num_outputs"), [(6, 3), (7, 3), (8, 3)])
def test_split_18_num_outputs(length: int, num_outputs: int) -> None:
    _check_node("Split", {"x": _rand(2, 3, length)}, opset=18, n_outputs=num_outputs, axis=-1,
                num_outputs=num_outputs)


def test_split_18_runtime_split() -> None:
    x, split = _rand(2, 7), np.array([4, 3], np.int64)
    _check_node("Split", {"x": x, "split": split}, opset=18, n_outputs=2, axis=1)


# ------------------------------------------------------------------------------ Reduce

_REDUCE_OPS = ["ReduceMean", "ReduceL1", "ReduceL2", "ReduceProd", "ReduceSumSquare", "ReduceMax",
               "ReduceMin", "ReduceLogSum", "ReduceLogSumExp"]


@pytest.mark.parametrize("op", _REDUCE_OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[2, 3], [-1], [1, 3], None])
def test_reduce_18(op: str, keepdims: int, axes: list[int] | None) -> None:
    x = {"x": _rand(2, 3, 4, 5, low=0.5, high=1.5)}
    initializers = {} if axes is None else {"axes": np.array(axes, np.int64)}
    # sums over up to 120 values of ~1: float32 summation order shows at ~1e-5 relative
    _check_node(op, x, initializers, opset=18, keepdims=keepdims, rtol=1e-5)


@pytest.mark.parametrize(("op", "opset"), [("ReduceMax", 20), ("ReduceMin", 20), ("ReduceLogSum", 28),
                                           ("ReduceLogSumExp", 28), ("ReduceMean", 18)])
def test_reduce_runtime_axes_and_later_versions(op: str, opset: int) -> None:
    x, axes = _rand(2, 3, 4, low=0.5, high=1.5), np.array([0, 2], np.int64)
    _check_node(op, {"x": x, "axes": axes}, opset=opset, keepdims=1)


def test_reduce_empty_axes_noop() -> None:
    x = {"x": _rand(2, 3)}
    _check_node("ReduceMean", x, {"axes": np.array([], np.int64)}, opset=18, noop_with_empty_axes=1)
    _check_node("ReduceMean", x, {"axes": np.array([], np.int64)}, opset=18, keepdims=0)


# ------------------------------------------------------- versions with the old semantics


def _one_input(x: np.ndarray, **attrs: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    return {"x": x}, {}, attrs


def _alias_spec(op: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any], int]:
    """Inputs, initializers, attributes and output count for one node of `op`."""
    x4 = _rand(1, 2, 5, 6, low=-1, high=1)
    specs: dict[str, Any] = {
        "Acos": _one_input(_rand(3, 4, low=-0.9, high=0.9)),
        "Asin": _one_input(_rand(3, 4, low=-0.9, high=0.9)),
        "Atan": _one_input(_rand(3, 4, low=-3, high=3)),
        "Cos": _one_input(_rand(3, 4, low=-3, high=3)),
        "Sin": _one_input(_rand(3, 4, low=-3, high=3)),
        "Tan": _one_input(_rand(3, 4, low=-1, high=1)),
        "Elu": _one_input(x4, alpha=0.7),
        "HardSigmoid": _one_input(x4, alpha=0.3, beta=0.4),
        "Selu": _one_input(x4),
        "HardSwish": _one_input(x4 * 4),
        "Softplus": _one_input(x4),
        "Softsign": _one_input(x4),
        "Celu": _one_input(x4, alpha=0.8),
        "Round": _one_input(np.array([0.5, 1.5, -0.5, 2.4, -2.6], np.float32)),
        "Cast": _one_input(np.array([2.7, -1.3, 0.2], np.float32), to=TensorProto.INT32),
        "Constant": ({}, {}, {"value": numpy_helper.from_array(_rand(2, 3))}),
        "ConstantOfShape": ({"shape": np.array([2, 3], np.int64)}, {},
                            {"value": numpy_helper.from_array(np.array([1.5], np.float32))}),
        "Conv": ({"x": x4}, {"w": _rand(4, 2, 3, 3), "b": _rand(4)}, {"pads": [1, 1, 1, 1]}),
        "ConvTranspose": ({"x": x4}, {"w": _rand(2, 3, 4, 4), "b": _rand(3)},
                          {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
        "Dropout": _one_input(x4),
        "Einsum": ({"a": _rand(2, 3), "b": _rand(3, 4)}, {}, {"equation": "ij,jk->ik"}),
        "Equal": ({"a": np.array([1, 2, 3], np.int64), "b": np.array([1, 0, 3], np.int64)}, {}, {}),
        "GreaterOrEqual": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
        "LessOrEqual": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
        "EyeLike": _one_input(_rand(3, 4), k=1),
        "Flatten": _one_input(x4, axis=2),
        "GlobalAveragePool": _one_input(x4),
        "Identity": _one_input(x4),
        "InstanceNormalization": ({"x": x4}, {"s": _rand(2), "b": _rand(2)}, {}),
        "IsInf": _one_input(np.array([1, np.inf, -np.inf, np.nan], np.float32)),
        "IsNaN": _one_input(np.array([1, np.inf, np.nan], np.float32)),
        "MaxPool": _one_input(x4, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        "Mod": ({"a": np.array([-7, 5, 9, -4], np.int64), "b": np.array([3, -2, 4, -3], np.int64)}, {}, {}),
        "Range": ({}, {"start": np.array(1.0, np.float32), "limit": np.array(7.0, np.float32),
                       "delta": np.array(1.5, np.float32)}, {}),
        "ScatterND": ({"x": _rand(4, 3)}, {"i": np.array([[1], [3]], np.int64), "u": _rand(2, 3)}, {}),
        "Shape": _one_input(x4, start=1, end=-1),
        "Squeeze": ({"x": _rand(1, 3, 1, 4)}, {"axes": np.array([0, 2], np.int64)}, {}),
        "Unsqueeze": ({"x": _rand(3, 4)}, {"axes": np.array([0, 2], np.int64)}, {}),
        "Transpose": _one_input(x4, perm=[0, 2, 3, 1]),
        "TopK": ({"x": _rand(3, 6)}, {"k": np.array([2], np.int64)}, {}),
        "Gemm": ({"a": _rand(2, 3)}, {"b": _rand(3, 4), "c": _rand(4)}, {"alpha": 0.5, "beta": 2.0}),
        "Max": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
        "Min": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
        "Mean": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
        "Sum": ({"a": _rand(3, 4), "b": _rand(3, 4)}, {}, {}),
    }
    inputs, initializers, attrs = specs[op]
    return inputs, initializers, attrs, 2 if op == "TopK" else 1


def _alias_cases() -> list[Any]:
    cases = []
    for table in (SAME_AS, OLD_SAME_AS):
        for op, (_, versions) in sorted(table.items()):
            cases += [pytest.param(op, version, id=f"{op}-{version}") for version in versions]
    return cases


@pytest.mark.parametrize(("op", "version"), _alias_cases())
def test_same_semantics_versions(op: str, version: int) -> None:
    """Each type-only version bump, run at an opset where exactly that version is current."""
    inputs, initializers, attrs, n_outputs = _alias_spec(op)
    opset = max(version, 7)  # onnxruntime runs opset >= 7
    assert defs.get_schema(op, opset).since_version == version  # the alias, not its base, is used
    _check_node(op, inputs, initializers, opset=opset, n_outputs=n_outputs, **attrs)


# --------------------------------------------------------------------------- small ops


@pytest.mark.parametrize("opset", [9, 16])
@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (5,), (3, 4, 5), (1, 1, 5)])
def test_prelu(opset: int, slope_shape: tuple[int, ...]) -> None:
    x = _rand(2, 3, 4, 5, low=-1, high=1)
    _check_node("PRelu", {"x": x}, {"slope": _rand(*slope_shape)}, opset=opset)


def test_prelu_last_axis_slope_equal_to_channels() -> None:
    """A [K] slope broadcasts over the last axis; onnx2torch took it as per-channel when K == C."""
    x = _rand(1, 5, 3, 5, low=-1, high=1)
    _check_node("PRelu", {"x": x}, {"slope": _rand(5)}, opset=16)


@pytest.mark.parametrize("opset", [10, 11, 13])
@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1, 0], [3, 2**62], [1, 3], None),
        ([-1], [-(2**62)], [2], [-1]),  # torch.flip as exported
        ([4, -2], [0, 1], [-1, 1], [-2, -1]),
        ([0, 1], [-1, 100], None, [2, 3]),
    ],
)
def test_slice(opset: int, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None) -> None:
    initializers = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    names = ["x", "starts", "ends", "", ""]
    if axes is not None:
        initializers["axes"], names[3] = np.array(axes, np.int64), "axes"
    if steps is not None:
        initializers["steps"], names[4] = np.array(steps, np.int64), "steps"
    while names[-1] == "":
        names.pop()
    _check_node("Slice", {"x": _rand(3, 6, 7, 5)}, initializers, opset=opset, input_names=names)


@pytest.mark.parametrize("opset", [7, 9])
def test_slice_1(opset: int) -> None:
    _check_node("Slice", {"x": _rand(3, 6, 7)}, opset=opset, starts=[1, -5], ends=[2**62, -1], axes=[1, 2])
    _check_node("Slice", {"x": _rand(3, 6)}, opset=opset, starts=[0, 2], ends=[2, 5])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_20(approximate: str) -> None:
    _check_node("Gelu", {"x": _rand(2, 3, 4, low=-3, high=3)}, opset=20, approximate=approximate)


@pytest.mark.parametrize("opset", [18, 22])
def test_mish(opset: int) -> None:
    _check_node("Mish", {"x": _rand(2, 3, 4, low=-3, high=3)}, opset=opset)


@pytest.mark.parametrize("opset", [7, 22])
def test_global_max_pool(opset: int) -> None:
    _check_node("GlobalMaxPool", {"x": _rand(2, 3, 4, 5)}, opset=opset)


@pytest.mark.parametrize("opset", [19, 22])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_average_pool_19(opset: int, count_include_pad: int) -> None:
    _check_node("AveragePool", {"x": _rand(1, 2, 7, 8)}, opset=opset, kernel_shape=[3, 3], strides=[2, 2],
                pads=[1, 1, 1, 1], dilations=[1, 1], count_include_pad=count_include_pad)


def test_average_pool_dilated_is_refused_with_node_name() -> None:
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool7", kernel_shape=[3, 3], dilations=[2, 2])
    with pytest.raises(ModelError, match=r"pool7.*AveragePool-19.*dilations"):
        to_torch(_model([node], {"x": _rand(1, 1, 9, 9)}, {}, ["y"], 19))


def test_batch_norm_7() -> None:
    x = _rand(2, 3, 4, 5)
    params = {"s": _rand(3), "b": _rand(3), "m": _rand(3), "v": _rand(3, low=0.5, high=1.5)}
    _check_node("BatchNormalization", {"x": x}, params, opset=7, epsilon=1e-3)


@pytest.mark.parametrize(("axis", "param_shape"), [(-1, (8,)), (1, (5, 8)), (-2, (5, 8))])
def test_layer_norm_with_dynamic_dims(axis: int, param_shape: tuple[int, ...]) -> None:
    """onnx2torch read normalized_shape from inferred shapes: 0 for dynamic dims."""
    x = _rand(2, 5, 8)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=axis)
    graph = helper.make_graph(
        [node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t", "c"])],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(_rand(*param_shape), "s"), numpy_helper.from_array(_rand(*param_shape), "b")],
    )
    _assert_parity(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x})


@pytest.mark.parametrize("opset", [14, 19, 21])
@pytest.mark.parametrize(("shape", "allowzero"), [([3, -1], 1), ([0, -1], 0), ([-1, 2, 0], 0)])
def test_reshape_allowzero(opset: int, shape: list[int], allowzero: int) -> None:
    _check_node("Reshape", {"x": _rand(3, 4, 2)}, {"shape": np.array(shape, np.int64)}, opset=opset,
                allowzero=allowzero)


# ---------------------------------------------------------------------- graph repairs


def _shared_weight_graph(opset: int = 17) -> onnx.ModelProto:
    """The legacy exporter's dedup of equal weights: the second conv reads Identity(weight)."""
    nodes = [
        helper.make_node("Identity", ["sub_mean.weight"], ["add_mean.weight"]),
        helper.make_node("Identity", ["add_mean.weight"], ["third.weight"]),  # chains resolve too
        helper.make_node("Conv", ["x", "sub_mean.weight", "bias"], ["h"], name="sub_mean"),
        helper.make_node("Conv", ["h", "add_mean.weight", "bias"], ["h2"], name="add_mean"),
        helper.make_node("Conv", ["h2", "third.weight"], ["y"], name="third"),
    ]
    weight = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1) * 0.9
    return _model(nodes, {"x": _rand(1, 3, 4, 5)}, {"sub_mean.weight": weight, "bias": _rand(3)}, ["y"], opset)


def test_identity_wrapped_initializers() -> None:
    model = _shared_weight_graph()
    with pytest.raises(KeyError, match="add_mean.weight"):
        onnx2torch.convert(model)  # the failure prepare_graph exists for
    _assert_parity(model, {"x": _rand(1, 3, 4, 5)})


def test_prepare_graph_returns_a_fixed_copy() -> None:
    model = _shared_weight_graph()
    before = model.SerializeToString()
    fixed = prepare_graph(model)
    assert model.SerializeToString() == before
    assert [n.op_type for n in fixed.graph.node] == ["Conv", "Conv", "Conv"]
    assert [n.input[1] for n in fixed.graph.node] == ["sub_mean.weight"] * 3


def test_identity_feeding_a_graph_output_is_kept() -> None:
    nodes = [helper.make_node("Identity", ["w"], ["y"])]
    model = _model(nodes, {}, {"w": _rand(2, 2)}, ["y"], 19)
    assert [n.op_type for n in prepare_graph(model).graph.node] == ["Identity"]
    _assert_parity(model, {})


def test_constant_node_weights() -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], _rand(4, 3, 3, 3).ravel())
    nodes = [
        helper.make_node("Constant", [], ["w"], value=weight),
        helper.make_node("Constant", [], ["k"], value_float=0.5),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "k"], ["y"]),
    ]
    x = _rand(1, 3, 5, 6)
    _assert_parity(_model(nodes, {"x": x}, {}, ["y"], 19), {"x": x})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("kernel", [3, 4])
def test_same_auto_pad_stride_1(auto_pad: str, kernel: int) -> None:
    x = _rand(1, 2, 6, 7)
    conv = helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=auto_pad)
    pool = helper.make_node("MaxPool", ["c"], ["y"], auto_pad=auto_pad, kernel_shape=[kernel, kernel])
    model = _model([conv, pool], {"x": x}, {"w": _rand(3, 2, kernel, kernel)}, ["y"], 17)
    _assert_parity(model, {"x": x})


def test_local_functions_are_inlined() -> None:
    function = helper.make_function(
        "sr.local", "ScaledRelu", ["a"], ["b"],
        [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Add", ["r", "r"], ["b"])],
        opset_imports=[helper.make_opsetid("", 18)],
    )
    node = helper.make_node("ScaledRelu", ["x"], ["y"], domain="sr.local")
    model = _model([node], {"x": _rand(2, 3, low=-1, high=1)}, {}, ["y"], 18, domains={"sr.local": 1})
    model.functions.append(function)
    assert unsupported_ops(model) == []  # looked into, as to_torch inlines it
    _assert_parity(model, {"x": _rand(2, 3, low=-1, high=1)})


# ------------------------------------------------------------------- errors, registry


def _unsupported_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Det", ["x"], ["d"]),
        helper.make_node("Foo", ["d"], ["y"], domain="com.example"),
        helper.make_node("Det", ["x"], ["d2"]),
    ]
    return _model(nodes, {"x": _rand(2, 3, 3)}, {}, ["y", "d2"], 17, domains={"com.example": 1})


def test_unsupported_ops_are_listed_with_opset() -> None:
    assert unsupported_ops(_unsupported_model()) == ["Det-17", "com.example.Foo-1"]
    assert unsupported_ops(_shared_weight_graph()) == []


def test_to_torch_raises_unsupported_operator_error() -> None:
    with pytest.raises(UnsupportedOperatorError, match="Det-17") as info:
        to_torch(_unsupported_model())
    assert info.value.ops == ["Det-17", "com.example.Foo-1"]


def test_other_conversion_failures_are_model_errors() -> None:
    """A Conv whose weight is a graph input: onnx2torch cannot make a module of it."""
    x, w = _rand(1, 2, 4, 4), _rand(3, 2, 1, 1)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1")], {"x": x, "w": w}, {}, ["y"], 17)
    with pytest.raises(ModelError, match=r"conv1.*Conv-17") as info:
        to_torch(model)
    assert not isinstance(info.value, UnsupportedOperatorError)


def test_additions_are_registered() -> None:
    for op, version in [("Conv", 22), ("Resize", 19), ("Pad", 18), ("Split", 18), ("ReduceMean", 18),
                        ("Identity", 21), ("Constant", 21), ("Upsample", 9), ("DepthToSpace", 1)]:
        registry.get_converter(op, version)


@pytest.mark.parametrize(("op", "since"), sorted(REPLACEMENTS), ids=lambda v: str(v))
def test_every_replacement_has_a_reason_and_a_converter(op: str, since: int) -> None:
    """Replacements live in sreval's own domain (onnx2torch's key stays its own), and
    prepare_graph moves exactly the listed (operator, version) nodes there."""
    assert REPLACEMENTS[(op, since)].strip()
    registry.get_converter(replaced_name(op, since), 1, domain=DOMAIN)
    registry.get_converter(op, since)  # onnx2torch's own converter is left in place
    node = helper.make_node(op, [], [], domain="")
    model = helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", since)])
    moved = prepare_graph(model).graph.node[0]
    assert (moved.domain, moved.op_type) == (DOMAIN, replaced_name(op, since))


def test_to_torch_returns_eval_mode() -> None:
    node = helper.make_node("Dropout", ["x"], ["y"])
    module = to_torch(_model([node], {"x": _rand(2, 3)}, {}, ["y"], 13))
    assert not any(m.training for m in module.modules())


# ------------------------------------------------------------------ exported SR models


class MeanShift(nn.Conv2d):
    """EDSR's fixed 1x1 mean shift; sub and add share equal weights, which the legacy
    exporter deduplicates into Identity(initializer)."""

    def __init__(self, mean: torch.Tensor, sign: float):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * mean
        self.requires_grad_(False)


class TinySR(nn.Module):
    """x2 SR net with the ops real SR graphs use; odd sizes exercise the dynamic-shape paths."""

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor([0.45, 0.44, 0.40])
        self.register_buffer("rgb_std", torch.tensor([0.9, 1.0, 1.1]).view(1, 3, 1, 1))
        self.sub_mean, self.add_mean = MeanShift(mean, -1.0), MeanShift(mean, 1.0)
        self.head = nn.Conv2d(3, 16, 3, padding=1)
        self.side = nn.Conv2d(12, 64, 1)
        self.act, self.prelu = nn.LeakyReLU(0.2), nn.PReLU(8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.deconv = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.attention = nn.Conv2d(16, 16, 1)
        self.up, self.shuffle = nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h, w = x.shape[-2:]
        y = self.sub_mean(x) / self.rgb_std
        feat = self.head(y)
        unshuffled = F.pixel_unshuffle(F.pad(y, (0, w % 2, 0, h % 2), mode="reflect"), 2)
        feat = feat + F.pixel_shuffle(self.side(unshuffled), 2)[..., :h, :w]
        a, b = torch.split(self.act(feat), 8, dim=1)
        pooled = F.max_pool2d(self.down(a), 3, stride=2, padding=1)
        a = a + F.interpolate(self.deconv(pooled), size=a.shape[-2:], mode="bilinear") + F.avg_pool2d(a, 3, 1, 1)
        body = self.body(torch.cat([a, self.prelu(b)], 1))
        std = (body - body.mean((2, 3), keepdim=True)).pow(2).mean((2, 3), keepdim=True).sqrt()
        body = body * torch.sigmoid(self.attention(F.adaptive_avg_pool2d(body, 1) + std))
        out = self.add_mean(self.shuffle(self.up(body + feat)) * self.rgb_std)
        base = F.interpolate(x, scale_factor=2, mode="bicubic")
        base = base + 0.1 * F.interpolate(x, scale_factor=2, mode="bilinear")
        base = base + 0.1 * F.interpolate(x, scale_factor=2, mode="nearest")
        return (out + base).clamp(0.0, 1.5)


@pytest.fixture(scope="module")
def tiny_sr() -> TinySR:
    torch.manual_seed(0)
    return TinySR().eval()


def _export(model: nn.Module, dynamo: bool, path: str) -> onnx.ModelProto:
    example = torch.rand(2, 3, 13, 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dim = torch.export.Dim
            shapes = {"x": {0: dim("batch", min=1, max=8), 2: dim("h", min=4, max=1024), 3: dim("w", min=4, max=1024)}}
            torch.onnx.export(model, (example,), path, dynamo=True, input_names=["x"], output_names=["y"],
                              dynamic_shapes=shapes)
        else:
            axes = {"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch", 2: "h2", 3: "w2"}}
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes=axes)
    return onnx.load(path)


@pytest.fixture(scope="module", params=["legacy-opset17", "dynamo-default"])
def exported(
    request: pytest.FixtureRequest, tiny_sr: TinySR, tmp_path_factory: pytest.TempPathFactory
) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("export") / f"{request.param}.onnx"
    return _export(tiny_sr, request.param.startswith("dynamo"), str(path))


@pytest.mark.slow
def test_exported_graph_has_the_known_trouble(exported: onnx.ModelProto) -> None:
    """The exports really contain what the repairs are for (else the test proves less)."""
    opset = {o.domain or "": o.version for o in exported.opset_import}[""]
    ops = {n.op_type for n in exported.graph.node}
    assert {"DepthToSpace", "Resize", "Conv", "PRelu", "ReduceMean"} <= ops
    if opset == 17:
        inits = {t.name for t in exported.graph.initializer}
        assert any(n.op_type == "Identity" and n.input[0] in inits for n in exported.graph.node)
    else:  # Resize-18+, ReduceMean-18 (axes input), Split-18, Reshape with allowzero=1
        assert opset >= 18 and "Split" in ops
        reshapes = [n for n in exported.graph.node if n.op_type == "Reshape"]
        assert any(a.name == "allowzero" and a.i == 1 for n in reshapes for a in n.attribute)


@pytest.mark.parametrize("shape", [(1, 3, 13, 17), (2, 3, 9, 11)])
def test_exported_sr_model_matches_onnxruntime(
    exported: onnx.ModelProto, tiny_sr: TinySR, shape: tuple[int, ...]
) -> None:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    module = to_torch(exported)
    (expected,) = _ort(exported, {"x": x.numpy()})
    with torch.no_grad():
        got, native = module(x), tiny_sr(x)
    assert got.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
    assert np.abs(got.numpy() - expected).max() <= TOL
    assert (got - native).abs().max().item() <= TOL


def test_exported_sr_model_input_gradient(exported: onnx.ModelProto, tiny_sr: TinySR) -> None:
    module = to_torch(exported)
    module.requires_grad_(False)
    x = torch.rand(1, 3, 13, 17, requires_grad=True)
    (grad,) = torch.autograd.grad(module(x).square().mean(), x)
    (native,) = torch.autograd.grad(tiny_sr(x).square().mean(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum().item() > 0
    torch.testing.assert_close(grad, native, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ every converter, one node each


def _one_node_spec(op: str, version: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str] | None,
                                                    dict[str, Any], int]:
    """(inputs, initializers, input names, attributes, outputs) of a one-node graph of `op`."""
    i64 = np.int64
    x4 = {"x": _rand(1, 2, 4, 6)}
    if op == "Resize":
        if version == 10:
            return x4, {"scales": np.array([1, 1, 2, 2], np.float32)}, None, {"mode": "nearest"}, 1
        scales = {"roi": np.array([], np.float32), "scales": np.array([1, 1, 2, 1.5], np.float32)}
        return x4, scales, None, {"mode": "linear"}, 1
    if op == "Upsample":
        if version == 7:
            return x4, {}, None, {"scales": [1.0, 1.0, 2.0, 2.0], "mode": "nearest"}, 1
        return x4, {"scales": np.array([1, 1, 2, 2], np.float32)}, None, {"mode": "nearest"}, 1
    if op == "DepthToSpace":
        return {"x": _rand(1, 8, 3, 4)}, {}, None, {"blocksize": 2}, 1
    if op == "SpaceToDepth":
        return x4, {}, None, {"blocksize": 2}, 1
    if op == "Pad":
        return x4, {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], i64)}, None, {"mode": "reflect"}, 1
    if op == "Split":
        return {"x": _rand(2, 6)}, {}, None, {"axis": 1, "num_outputs": 3}, 3
    if op.startswith("Reduce"):
        return {"x": _rand(2, 3, 4, low=0.1)}, {"axes": np.array([1], i64)}, None, {"keepdims": 1}, 1
    if op == "PRelu":
        return {"x": _rand(2, 3, 4, 5, low=-1)}, {"slope": _rand(3, 1, 1)}, None, {}, 1
    if op == "Reshape":
        return {"x": _rand(2, 3, 4)}, {"shape": np.array([3, 8], i64)}, None, {}, 1
    if op == "LayerNormalization":
        return {"x": _rand(2, 3, 4)}, {"scale": _rand(4), "bias": _rand(4)}, None, {"axis": -1}, 1
    if op == "Slice":
        if version == 1:
            return x4, {}, None, {"starts": [1, 0], "ends": [3, -1], "axes": [2, 3]}, 1
        ints = {"starts": np.array([1, 0], i64), "ends": np.array([3, -1], i64), "axes": np.array([2, 3], i64)}
        return x4, ints, None, {}, 1
    if op == "GlobalMaxPool":
        return x4, {}, None, {}, 1
    if op == "AveragePool":
        return {"x": _rand(1, 2, 6, 6)}, {}, None, {"kernel_shape": [3, 3]}, 1
    if op == "Clip":  # a computed min and an empty max: what TorchScript writes for clamp_min
        return {"x": _rand(2, 3, low=-1), "lo": np.array(0.1, np.float32)}, {}, ["x", "lo", ""], {}, 1
    if op == "Sqrt":
        return {"x": np.array([0.0, 1e-14, 0.25, 2.0], np.float32)}, {}, None, {}, 1
    if op in ("Round", "Floor", "Ceil"):  # ties, both signs: Round is half to even
        return {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.3, -1.7], np.float32)}, {}, None, {}, 1
    if op == "Cast":  # to uint8 (a deployed model's image output), in range: ONNX leaves overflow undefined
        return {"x": _rand(2, 5, low=0, high=255)}, {}, None, {"to": TensorProto.UINT8}, 1
    if op in ("Gelu", "Mish"):
        return {"x": _rand(2, 3, low=-2, high=2)}, {}, None, {}, 1
    if op == "BatchNormalization":
        stats = {"scale": _rand(3), "b": _rand(3), "mean": _rand(3), "var": _rand(3, low=0.5)}
        return {"x": _rand(2, 3, 4, 4)}, stats, None, {}, 1
    if op == "ScatterND":  # rows 2 and 0 of a [4, 3] tensor; reductions from ScatterND-16 on
        updates = {"idx": np.array([[2], [0]], i64), "upd": _rand(2, 3)}
        return {"x": _rand(4, 3)}, updates, None, {} if version < 16 else {"reduction": "add"}, 1
    if op == "GridSample":  # a grid reaching past the borders, so the padding mode matters
        grid = _rand(1, 5, 7, 2, low=-1.2, high=1.2)
        mode = "bicubic" if version == 16 else "cubic"
        return {"x": _rand(1, 2, 4, 6), "grid": grid}, {}, None, {"mode": mode, "padding_mode": "border"}, 1
    raise AssertionError(f"no one-node case for {op}-{version}: add one to _one_node_spec")


ALIASES = {(op, v) for table in (SAME_AS, OLD_SAME_AS) for op, (_, versions) in table.items() for v in versions}


# the quantised and contrib operators have their own one-node tests (tests/test_convert_deployed.py)
ONE_NODE = sorted((op, v) for op, v in set(CONVERTERS) - ALIASES - contrib.ONNX_DOMAIN
                  if op not in quant.OPERATORS and "." not in op)


@pytest.mark.parametrize(("op", "version"), ONE_NODE, ids=lambda v: str(v))
def test_every_sreval_converter_against_onnxruntime(op: str, version: int) -> None:
    """Every converter sreval registers (additions and replacements; aliases have their own
    test above), as one node at an opset where exactly that version is current."""
    inputs, initializers, names, attrs, n_outputs = _one_node_spec(op, version)
    opset = max(version, 7)
    assert defs.get_schema(op, opset).since_version == version
    if (op, version) == ("Upsample", 10):  # onnxruntime refuses it (deprecated): Resize-10 is the same op
        node = helper.make_node("Upsample", [*inputs, *initializers], ["y"], **attrs)
        same = helper.make_node("Resize", [*inputs, *initializers], ["y"], **attrs)
        got = _torch(_model([node], inputs, initializers, ["y"], 10), inputs)
        want = _ort(_model([same], inputs, initializers, ["y"], 10), inputs)
        np.testing.assert_allclose(got[0], want[0], atol=TOL)
        return
    _check_node(op, inputs, initializers, opset=opset, n_outputs=n_outputs, input_names=names, **attrs)


@pytest.mark.parametrize("opset", [16, 20])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample_modes(opset: int, mode: str, padding_mode: str, align_corners: int) -> None:
    """GridSample (DySample upsamplers) in every mode against onnxruntime; ONNX-20 names the
    modes linear / cubic."""
    if opset >= 20:
        mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    inputs = {"x": _rand(2, 3, 5, 6), "grid": _rand(2, 4, 7, 2, low=-1.3, high=1.3)}
    _check_node("GridSample", inputs, {}, opset=opset, mode=mode, padding_mode=padding_mode,
                align_corners=align_corners)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("case", ["points", "slices", "empty", "empty_data", "negative"])
def test_scatter_nd(reduction: str, case: str) -> None:
    """ScatterND-18 against onnxruntime: single elements, whole slices, zero-element updates
    (the dynamo export of a shifted-window mask), negative indices; every reduction."""
    i64 = np.int64
    data = _rand(2, 0, 5, 1) if case == "empty_data" else _rand(2, 4, 5, 3)
    idx, upd = {
        "empty_data": (np.array([[1], [0]], i64), np.zeros((2, 0, 5, 1), np.float32)),
        "points": (np.array([[0, 1, 2, 0], [1, 3, 4, 2]], i64), _rand(2)),
        "slices": (np.array([[[1, 0]], [[0, 3]]], i64), _rand(2, 1, 5, 3)),
        "empty": (np.zeros((1, 0, 5, 3), i64), np.zeros((1, 0, 5, 3), np.float32)),
        "negative": (np.array([[-1, -2]], i64), _rand(1, 5, 3)),
    }[case]
    _check_node("ScatterND", {"x": data}, {"idx": idx, "upd": upd}, opset=18, reduction=reduction)
