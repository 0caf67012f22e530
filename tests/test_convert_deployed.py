"""One-node tests against onnxruntime for the converters of deployed graphs: the quantised
operators (every integer type and quantisation axis), onnxruntime's contrib operators, and
the straight-through rounding. Integer outputs must be equal (the requantising operators may
differ by one step where a float tie falls differently), float outputs close."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from sreval.convert import contrib, quant, rounding, to_torch
from sreval.convert.registry import CONVERTERS, MS_DOMAIN
from sreval.convert.nchwc import block_size
from sreval.onnxfile import compute_precision
from tests.test_convert import _model, _ort, _torch

RNG = np.random.default_rng(11)
MS = {MS_DOMAIN: 1}
TYPES = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8, np.uint16: TensorProto.UINT16,
         np.int16: TensorProto.INT16}


def _ints(dtype: type, *shape: int, low: int | None = None, high: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min if low is None else low, (info.max if high is None else high) + 1,
                        size=shape).astype(dtype)


def _f(*shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


def _check(op: str, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], *, names: list[str] | None = None,
           opset: int = 21, domain: str = "", outputs: int = 1, steps: int = 0, tol: float = 1e-5,
           **attrs: Any) -> None:
    node = helper.make_node(op, names if names is not None else [*inputs, *inits], [f"y{i}" for i in range(outputs)],
                            domain=domain, **attrs)
    model = _model([node], inputs, inits, [f"y{i}" for i in range(outputs)], opset, MS if domain else None)
    want, got = _ort(model, inputs), _torch(model, inputs)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        if np.issubdtype(w.dtype, np.integer):  # carried as a float holding the integers
            np.testing.assert_array_less(np.abs(g.astype(np.float64) - w.astype(np.float64)), steps + 0.5)
        else:
            np.testing.assert_allclose(g, w, atol=tol, rtol=1e-5)


# ----------------------------------------------------------------------------- Q / DQ


@pytest.mark.parametrize("dtype", list(TYPES))
@pytest.mark.parametrize("axis", [None, 1, 0])
def test_quantize_linear(dtype: type, axis: int | None) -> None:
    """Ties (x / scale = k + 0.5) round half to even; saturation at both ends."""
    x = (RNG.integers(-300, 300, size=(3, 4, 2, 2)) + 0.5).astype(np.float32) * 0.25
    x[0, 0, 0] = [1e6, -1e6]
    n = {None: 1, 1: 4, 0: 3}[axis]
    scale = np.full(n, 0.25, np.float32) if axis is not None else np.array(0.25, np.float32)
    zero = _ints(dtype, n, low=0, high=3) if axis is not None else np.array(2, dtype)
    _check("QuantizeLinear", {"x": x}, {"s": scale, "z": zero}, **({"axis": axis} if axis is not None else {}))


@pytest.mark.parametrize("dtype", [*TYPES, np.int32])
@pytest.mark.parametrize("axis", [None, 1, 0])
def test_dequantize_linear(dtype: type, axis: int | None) -> None:
    q = _ints(dtype, 3, 4, 5, low=-1000 if dtype == np.int32 else None, high=1000 if dtype == np.int32 else None)
    n = {None: 1, 1: 4, 0: 3}[axis]
    scale = _f(n, low=0.01, high=0.1) if axis is not None else np.array(0.037, np.float32)
    inits = {"s": scale}
    if dtype != np.int32:  # int32 (biases) has no zero point
        inits["z"] = _ints(dtype, n, low=0, high=5) if axis is not None else np.array(3, dtype)
    _check("DequantizeLinear", {"q": q}, inits, **({"axis": axis} if axis is not None else {}))


def test_quantize_linear_opset_10_defaults_to_uint8() -> None:
    _check("QuantizeLinear", {"x": _f(2, 3, low=-2, high=2)}, {"s": np.array(0.01, np.float32)}, opset=10)


def test_dynamic_quantize_linear() -> None:
    for x in (_f(2, 3, 4), _f(5, low=0.2, high=3.0), np.zeros((2, 2), np.float32)):
        _check("DynamicQuantizeLinear", {"x": x}, {}, opset=11, outputs=3)


def test_straight_through_gradients() -> None:
    """The quantiser passes the gradient where it does not saturate, and nowhere else."""
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    model = _model([node], {"x": _f(6)}, {"s": np.array(0.1, np.float32), "z": np.array(0, np.int8)}, ["y"], 13)
    x = torch.tensor([0.03, -0.26, 5.0, -20.0, 12.71, 13.0], requires_grad=True)
    to_torch(model)(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([10.0, 10.0, 10.0, 0.0, 10.0, 0.0])  # 1/scale; 130 saturates


# ----------------------------------------------------------------------------- integer conv / matmul


@pytest.mark.parametrize("wtype", [np.uint8, np.int8])
def test_conv_integer(wtype: type) -> None:
    x, w = _ints(np.uint8, 1, 4, 7, 6), _ints(wtype, 6, 2, 3, 3, low=-20 if wtype == np.int8 else 0, high=20)
    inits = {"w": w, "xz": np.array(7, np.uint8), "wz": np.array(2, wtype)}  # onnxruntime: per tensor only
    _check("ConvInteger", {"x": x}, inits, names=["x", "w", "xz", "wz"], opset=10, pads=[1, 0, 0, 2],
           strides=[2, 1], group=2)


def test_conv_integer_without_zero_points() -> None:
    _check("ConvInteger", {"x": _ints(np.uint8, 1, 2, 5, 5)}, {"w": _ints(np.uint8, 3, 2, 3, 3, high=9)}, opset=10)


@pytest.mark.parametrize("btype", [np.uint8, np.int8])
def test_matmul_integer(btype: type) -> None:
    # int8 B within +-60: onnxruntime's x86 uint8 x int8 kernels saturate pairs of products past int16
    a, b = _ints(np.uint8, 2, 3, 5), _ints(btype, 5, 4, **({"low": -60, "high": 60} if btype == np.int8 else {}))
    inits = {"b": b, "az": np.array(5, np.uint8), "bz": _ints(btype, 4, low=0, high=4)}
    _check("MatMulInteger", {"a": a}, inits, names=["a", "b", "az", "bz"], opset=10)


@pytest.mark.parametrize("xtype", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_qlinear_conv(xtype: type, per_channel: bool, bias: bool) -> None:
    x = _ints(xtype, 1, 3, 8, 7)
    w = _ints(np.int8, 4, 3, 3, 3, low=-60, high=60)
    ws = _f(4, low=0.002, high=0.01) if per_channel else np.array(0.005, np.float32)
    inits = {"xs": np.array(0.02, np.float32), "xz": np.array(3, xtype), "w": w, "ws": ws,
             "wz": np.zeros(4 if per_channel else (), np.int8), "ys": np.array(0.3, np.float32),
             "yz": np.array(-5 if xtype == np.int8 else 120, xtype)}
    if bias:
        inits["b"] = RNG.integers(-3000, 3000, size=4).astype(np.int32)
    _check("QLinearConv", {"x": x}, inits, opset=10, steps=1, pads=[1, 1, 1, 1], strides=[1, 2])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_matmul(dtype: type) -> None:
    zero = 120 if dtype == np.uint8 else -8
    inits = {"as": np.array(0.02, np.float32), "az": np.array(zero, dtype), "b": _ints(np.int8, 6, 3, low=-50, high=50),
             "bs": np.array(0.01, np.float32), "bz": np.array(0, np.int8), "ys": np.array(0.05, np.float32),
             "yz": np.array(zero + 5, dtype)}
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    _check("QLinearMatMul", {"a": _ints(dtype, 2, 4, 6)}, inits, names=names, opset=10, steps=1)


# ----------------------------------------------------------------------------- com.microsoft QLinear*


def _q(name: str, scale: float, zero: int, dtype: type = np.uint8) -> dict[str, np.ndarray]:
    return {f"{name}s": np.array(scale, np.float32), f"{name}z": np.array(zero, dtype)}


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_binary(op: str, dtype: type) -> None:
    zero = 0 if dtype == np.int8 else 128
    a, b = _ints(dtype, 1, 3, 4, 5), _ints(dtype, 1, 3, 1, 5)  # broadcast
    inits = {**_q("a", 0.02, zero, dtype), "b": b, **_q("b", 0.03, zero - 3, dtype), **_q("c", 0.05, zero + 2, dtype)}
    _check(op, {"a": a}, inits, names=["a", "as", "az", "b", "bs", "bz", "cs", "cz"], domain=MS_DOMAIN, steps=1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_concat(dtype: type) -> None:
    shift = 0 if dtype == np.uint8 else -128
    inits = {**_q("y", 0.04, 100 + shift, dtype), **_q("a", 0.02, 128 + shift, dtype), "b": _ints(dtype, 1, 3, 4, 4),
             **_q("b", 0.05, 90 + shift, dtype)}
    names = ["ys", "yz", "a", "as", "az", "b", "bs", "bz"]
    _check("QLinearConcat", {"a": _ints(dtype, 1, 2, 4, 4)}, inits, names=names, domain=MS_DOMAIN, steps=1, axis=1)


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.2}),
                                      ("QLinearGlobalAveragePool", {}),
                                      ("QLinearAveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                                      ("QLinearAveragePool", {"kernel_shape": [2, 2], "strides": [2, 2],
                                                              "count_include_pad": 1})])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_unary(op: str, attrs: dict[str, Any], dtype: type) -> None:
    shift = 0 if dtype == np.uint8 else -128
    inits = {**_q("x", 0.05, 128 + shift, dtype),
             **_q("y", 0.01 if op == "QLinearSigmoid" else 0.04, (0 if op == "QLinearSigmoid" else 100) + shift, dtype)}
    _check(op, {"x": _ints(dtype, 1, 3, 6, 6)}, inits, names=["x", "xs", "xz", "ys", "yz"], domain=MS_DOMAIN,
           steps=1, **attrs)


# ----------------------------------------------------------------------------- contrib float operators


@pytest.mark.parametrize("act,params", [("Relu", []), ("Sigmoid", []), ("Tanh", []), ("LeakyRelu", [0.3]),
                                        ("Clip", [-0.2, 0.4]), ("HardSigmoid", [0.3, 0.4])])
@pytest.mark.parametrize("with_sum", [False, True])
def test_fused_conv(act: str, params: list[float], with_sum: bool) -> None:
    x = _f(1, 4, 7, 6)
    inits = {"w": _f(6, 2, 3, 3), "b": _f(6)}
    names = ["x", "w", "b"]
    if with_sum:
        inits["z"] = _f(1, 6, 7, 3)
        names.append("z")
    attrs: dict[str, Any] = {"activation": act, "pads": [1, 1, 1, 1], "strides": [1, 2], "group": 2}
    if params:
        attrs["activation_params"] = params
    _check("FusedConv", {"x": x}, inits, names=names, domain=MS_DOMAIN, **attrs)


def test_fused_gemm() -> None:
    inits = {"b": _f(5, 4), "c": _f(5)}
    _check("FusedGemm", {"a": _f(3, 4)}, inits, domain=MS_DOMAIN, transB=1, alpha=0.7, beta=1.3,
           activation="LeakyRelu", activation_alpha=0.1)


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1)])
def test_fused_matmul(trans_a: int, trans_b: int) -> None:
    a = _f(2, 5, 4) if trans_a else _f(2, 4, 5)
    b = _f(2, 3, 5) if trans_b else _f(2, 5, 3)
    _check("FusedMatMul", {"a": a}, {"b": b}, domain=MS_DOMAIN, alpha=0.5, transA=trans_a, transB=trans_b)


@pytest.mark.parametrize("op,names,attrs", [("Gelu", ["x"], {}), ("BiasGelu", ["x", "bias"], {}),
                                            ("FastGelu", ["x", "bias"], {}), ("FastGelu", ["x"], {}),
                                            ("QuickGelu", ["x"], {"alpha": 1.5})])
def test_gelus(op: str, names: list[str], attrs: dict[str, Any]) -> None:
    inits = {"bias": _f(6)} if "bias" in names else {}
    _check(op, {"x": _f(2, 3, 6, low=-3, high=3)}, inits, names=names, domain=MS_DOMAIN, tol=1e-4, **attrs)


@pytest.mark.parametrize("op,names,outputs", [
    ("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], 1),
    ("SkipLayerNormalization", ["x", "skip", "gamma"], 4),
    ("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"], 1)])
def test_skip_layer_norms(op: str, names: list[str], outputs: int) -> None:
    inits = {"skip": _f(2, 5, 8), "gamma": _f(8), "beta": _f(8), "bias": _f(8)}
    inits = {k: v for k, v in inits.items() if k in names}
    _check(op, {"x": _f(2, 5, 8)}, inits, names=names, domain=MS_DOMAIN, outputs=outputs, tol=1e-4,
           epsilon=1e-5)


@pytest.mark.parametrize("op,opset", [("SimplifiedLayerNormalization", 17), ("LayerNormalization", 13)])
def test_onnx_domain_contrib_norms(op: str, opset: int) -> None:
    inits = {"scale": _f(4, 8)} | ({"bias": _f(4, 8)} if op == "LayerNormalization" else {})
    _check(op, {"x": _f(2, 4, 8)}, inits, opset=opset, tol=1e-4, axis=-2, epsilon=1e-5)


def test_dynamic_quantize_matmul() -> None:
    inits = {"b": _ints(np.int8, 6, 4, low=-60, high=60), "bs": _f(4, low=0.01, high=0.02),
             "bz": np.zeros(4, np.int8), "bias": _f(4)}
    _check("DynamicQuantizeMatMul", {"a": _f(3, 6)}, inits, domain=MS_DOMAIN, tol=1e-4)


def test_matmul_integer_to_float() -> None:
    inits = {"b": _ints(np.int8, 6, 4, low=-60, high=60), "as": np.array(0.02, np.float32),
             "bs": _f(4, low=0.01, high=0.02), "az": np.array(128, np.uint8), "bz": np.zeros(4, np.int8), "bias": _f(4)}
    _check("MatMulIntegerToFloat", {"a": _ints(np.uint8, 3, 6)}, inits, names=["a", "b", "as", "bs", "az", "bz", "bias"],
           domain=MS_DOMAIN, tol=1e-4)


# ----------------------------------------------------------------------------- rounding, casts


@pytest.mark.parametrize("to", [TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT16, TensorProto.INT16])
def test_cast_to_small_integers_is_straight_through(to: int) -> None:
    low, high = quant.INT_RANGES[to]
    x = RNG.uniform(low, high, size=(3, 7)).astype(np.float32)
    _check("Cast", {"x": x}, {}, opset=13, to=to)
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=to)], {"x": x}, {}, ["y"], 13)
    xt = torch.from_numpy(x).requires_grad_()
    to_torch(model)(xt).sum().backward()
    assert torch.equal(xt.grad, torch.ones_like(xt))


def test_round_is_straight_through() -> None:
    model = _model([helper.make_node("Round", ["x"], ["y"])], {"x": _f(4)}, {}, ["y"], 13)
    x = torch.tensor([0.5, 1.5, -2.5, 0.2], requires_grad=True)
    y = to_torch(model)(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 2.0, -2.0, 0.0] and x.grad.tolist() == [1.0] * 4


def test_sqrt_gradient_is_finite_at_zero() -> None:
    model = _model([helper.make_node("Sqrt", ["x"], ["y"])], {"x": _f(3)}, {}, ["y"], 13)
    x = torch.tensor([0.0, 0.25, 4.0], requires_grad=True)
    y = to_torch(model)(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 0.5, 2.0] and x.grad.tolist() == [0.0, 1.0, 0.25]


def test_casts_to_wide_integers_stay_real_casts() -> None:
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT64)], {"x": _f(3)}, {}, ["y"], 13)
    assert to_torch(model)(torch.tensor([1.7, -2.2, 3.0])).dtype == torch.int64


# ----------------------------------------------------------------------------- coverage


TESTED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv",
          "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu",
          "QLinearAveragePool", "QLinearGlobalAveragePool", "FusedConv", "FusedGemm", "FusedMatMul", "Gelu",
          "BiasGelu", "FastGelu", "QuickGelu", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
          "SimplifiedLayerNormalization", "LayerNormalization", "DynamicQuantizeMatMul",
          "MatMulIntegerToFloat", "Round", "Cast", "Sqrt",
          # com.microsoft.nchwc: made by onnxruntime itself in test_nchwc_graphs_from_onnxruntime
          "Conv", "ReorderInput", "ReorderOutput", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
          "Upsample"}


def test_every_deployment_converter_has_a_one_node_test() -> None:
    """Registry-driven: a converter added to quant or contrib without a test here fails."""
    names = {op.rsplit(".", 1)[-1] for op, _ in CONVERTERS}
    mine = {op for op in names if op in quant.OPERATORS or op.startswith("QLinear") or op in TESTED
            or op in {o for o, _ in contrib.ONNX_DOMAIN}}
    registered_here = {op.rsplit(".", 1)[-1] for op, _ in CONVERTERS if op.startswith(MS_DOMAIN)} | mine
    assert registered_here <= TESTED | {"Floor", "Ceil"}, sorted(registered_here - TESTED)
    assert rounding.STRAIGHT_THROUGH


# ----------------------------------------------------------------------------- NCHWc (optimisation level ALL)


def _optimised_all(model: Any, tmp_path: Any) -> Any:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "all.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def _conv(name: str, src: str, out: int, inp: int, k: int, group: int = 1, **attrs: Any) -> tuple[Any, dict]:
    w = RNG.standard_normal((out, inp // group, k, k)).astype(np.float32) * 0.2
    return (helper.make_node("Conv", [src, f"{name}w", f"{name}b"], [name], pads=[k // 2] * 4, group=group, **attrs),
            {f"{name}w": w, f"{name}b": _f(out)})


NCHWC_GRAPHS = {
    # (nodes as (Conv args) or (op, inputs, attrs)): every filter order, fused activation and sum, pools, upsample
    "convs": [("c", "x", 16, 3, 3), ("relu", "Relu", ["c"]), ("d", "relu", 24, 16, 3), ("e", "d", 24, 24, 3, 24),
              ("f", "e", 32, 24, 3, 2), ("g", "f", 5, 32, 1)],
    "sum-and-pools": [("c", "x", 16, 3, 3), ("d", "c", 16, 16, 3), ("s", "Add", ["c", "d"]),
                      ("m", "MaxPool", ["s"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
                      ("a", "AveragePool", ["m"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
                      ("u", "Resize", ["a", "", "scales"], {"mode": "nearest", "nearest_mode": "floor",
                                                            "coordinate_transformation_mode": "asymmetric"}),
                      ("e", "u", 8, 16, 3), ("gap", "GlobalAveragePool", ["e"]), ("y", "Mul", ["e", "gap"])],
    "linear-upsample": [("c", "x", 16, 3, 3), ("gmp", "GlobalMaxPool", ["c"]), ("m", "Mul", ["c", "gmp"]),
                        ("u", "Resize", ["m", "", "scales"], {"mode": "linear",
                                                             "coordinate_transformation_mode": "asymmetric"}),
                        ("y", "u", 3, 16, 3)],
}
NCHWC_OPS = ("Relu", "Add", "Mul", "MaxPool", "AveragePool", "Resize", "GlobalAveragePool", "GlobalMaxPool")


NCHWC_SEEN: set[str] = set()


@pytest.mark.parametrize("case", list(NCHWC_GRAPHS))
def test_nchwc_graphs_from_onnxruntime(case: str, tmp_path: Any) -> None:
    """Graphs that onnxruntime's ALL level turns into com.microsoft.nchwc operators, converted
    and compared with onnxruntime running the same saved file."""
    if block_size() is None:
        pytest.skip("this machine's onnxruntime writes no NCHWc layout (not x86)")
    nodes, inits = [], {"scales": np.array([1, 1, 2, 2], np.float32)}
    for spec in NCHWC_GRAPHS[case]:
        if spec[1] in NCHWC_OPS:
            name, op, ins, *attrs = spec
            nodes.append(helper.make_node(op, ins, [name], **(attrs[0] if attrs else {})))
        else:
            node, w = _conv(*spec)
            nodes.append(node)
            inits.update(w)
    last = nodes[-1].output[0]
    x = {"x": _f(1, 3, 12, 10)}
    model = _optimised_all(_model(nodes, x, inits, [last], 17), tmp_path)
    assert any(n.domain == "com.microsoft.nchwc" for n in model.graph.node)
    NCHWC_SEEN.update(n.op_type for n in model.graph.node if n.domain == "com.microsoft.nchwc")
    want, got = _ort(model, x), _torch(model, x)
    np.testing.assert_allclose(got[0], want[0], atol=1e-4, rtol=1e-4)


def test_compute_precision_ignores_shape_arithmetic() -> None:
    """Floor(h * 2) for a Resize size rounds no pixel; Round on the image does."""
    mk = helper.make_node
    size = [mk("Shape", ["x"], ["s"]), mk("Cast", ["s"], ["sf"], to=TensorProto.FLOAT), mk("Mul", ["sf", "two"], ["m"]),
            mk("Floor", ["m"], ["f"]), mk("Cast", ["f"], ["size"], to=TensorProto.INT64),
            mk("Resize", ["x", "", "", "size"], ["y"], mode="nearest")]
    inits = {"two": np.array([1, 1, 2, 2], np.float32)}
    x = {"x": _f(1, 3, 4, 4)}
    assert compute_precision(_model(size, x, inits, ["y"], 13)) == "fp32"
    rounded = size + [mk("Round", ["y"], ["z"])]
    assert compute_precision(_model(rounded, x, inits, ["z"], 13)) == "rounded"
