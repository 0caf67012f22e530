"""Deployment variants of real-weight SR models, as users ship them (timm-style registry).

`BASES` are float32 ONNX files without sreval metadata (foreign files): zoo models with their
real weights, and a TensorFlow-style graph (tf2onnx's NHWC input and operators). `VARIANTS`
turns one into what a deployment pipeline writes: onnxruntime's static quantisation (QDQ per
tensor and per channel, int8 and uint8 activations; QOperator), its dynamic quantisation
(ConvInteger), fp16 with float32 I/O, onnxruntime's optimiser at EXTENDED and ALL, onnxslim,
and wrappers for uint8 NHWC image I/O, a [-1, 1] range, ImageNet mean/std, a rank-3 input and
a second (bicubic) image input. Each variant is a function of (float file, target, calibration
LR crops); a new entry is tested without a new test.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sreval.zoo import _module, build, entry
from tests.test_foreign_exports import TfStyle

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

Build = Callable[[Path, Path, list[np.ndarray]], Path]


def strip(model: onnx.ModelProto) -> onnx.ModelProto:
    del model.metadata_props[:]
    return model


def tf_base(folder: Path) -> Path:
    """What tf2onnx writes for an ESPCN-like Keras model (tests/test_foreign_exports.TfStyle)."""
    return TfStyle().to_onnx(folder / "tf-style.onnx")


def zoo_base(name: str, folder: Path) -> Path:
    """The zoo entry's float32 export, its sreval metadata removed (a foreign file)."""
    path = build(name, out=folder / f"{name}-meta.onnx")
    target = folder / f"{name}.onnx"
    onnx.save(strip(onnx.load(str(path))), str(target))
    return target


# ----------------------------------------------------------------------------- quantisation


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over LR crops (NCHW float32 in [0, 1])."""

    def __init__(self, name: str, crops: list[np.ndarray]) -> None:
        self.feeds = iter([{name: c} for c in crops])

    def get_next(self) -> dict | None:
        return next(self.feeds, None)

    def rewind(self) -> None:  # pragma: no cover - newer onnxruntime calls it
        pass


def _static(fmt: str, per_channel: bool, activation: str) -> Build:
    def build(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = target.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        inp = onnx.load(str(pre)).graph.input[0]
        name = inp.name
        if _nhwc(inp):
            crops = [c.transpose(0, 2, 3, 1) for c in crops]
        # uint8 activations with int8 weights saturate in onnxruntime's x86 kernels without VNNI:
        # reduce_range (7-bit weights), as onnxruntime's documentation advises there
        quantize_static(str(pre), str(target), _Calibration(name, crops), quant_format=QuantFormat[fmt],
                        per_channel=per_channel, activation_type=QuantType[activation],
                        weight_type=QuantType.QInt8, reduce_range=activation == "QUInt8")
        return target
    return build


def _dynamic(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(target), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "MatMul"])
    return target


def _fp16(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the value is out of fp16 range" for tiny weights
        onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(target))
    return target


def _optimised(level: str) -> Build:
    def build(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.optimized_model_filepath = str(target)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return target
    return build


def _slim(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(src))), str(target))
    return target


# ----------------------------------------------------------------------------- wrappers


def wrap(src: Path, target: Path, before: list[onnx.NodeProto], after: list[onnx.NodeProto],
         inputs: list[onnx.ValueInfoProto], output: onnx.ValueInfoProto, init: list[onnx.TensorProto]) -> Path:
    """The model with nodes before its image input (`before` writes 'inner_in') and after its
    output (`after` reads 'inner_out'); new graph inputs and output."""
    model = onnx.load(str(src))
    g = model.graph
    old_in, old_out = g.input[0].name, g.output[0].name
    for node in g.node:
        node.input[:] = ["inner_in" if n == old_in else n for n in node.input]
        node.output[:] = ["inner_out" if n == old_out else n for n in node.output]
    nodes = [*before, *g.node, *after]
    graph = helper.make_graph(nodes, g.name, inputs, [output], initializer=[*g.initializer, *init])
    out = helper.make_model(graph, opset_imports=model.opset_import, producer_name=model.producer_name)
    out.ir_version = model.ir_version
    onnx.save(out, str(target))
    return target


def _const(name: str, values: object, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.float32).reshape(shape), name)


def _nhwc(vi: onnx.ValueInfoProto) -> bool:
    """Whether an image value is channels-last (its last axis holds the 3 channels)."""
    d = vi.type.tensor_type.shape.dim
    return d[len(d) - 1].dim_value == 3 and d[1].dim_value != 3


def _layouts(src: Path) -> tuple[bool, bool]:
    g = onnx.load(str(src)).graph
    return _nhwc(g.input[0]), _nhwc(g.output[0])


def _image(name: str, nhwc: bool, dtype: int = TensorProto.FLOAT, rank: int = 4) -> onnx.ValueInfoProto:
    dims = ["n", "h", "w", 3] if nhwc else ["n", 3, "h", "w"]
    return helper.make_tensor_value_info(name, dtype, dims[4 - rank:])


def _channel_shape(nhwc: bool) -> tuple[int, ...]:
    return (1, 1, 1, 3) if nhwc else (1, 3, 1, 1)


def _uint8_nhwc(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    """uint8 NHWC image in and out, Round + Clip + Cast at the end (an app's deployment)."""
    mk = helper.make_node
    in_nhwc, out_nhwc = _layouts(src)
    before = [mk("Cast", ["image"], ["f"], to=TensorProto.FLOAT)]
    before += [mk("Identity", ["f"], ["fc"])] if in_nhwc else [mk("Transpose", ["f"], ["fc"], perm=[0, 3, 1, 2])]
    before.append(mk("Div", ["fc", "k255"], ["inner_in"]))
    after = [mk("Mul", ["inner_out", "k255"], ["o255"]), mk("Round", ["o255"], ["r"]),
             mk("Clip", ["r", "k0", "k255"], ["c"]), mk("Cast", ["c"], ["u"], to=TensorProto.UINT8)]
    after.append(mk("Identity", ["u"], ["sr"]) if out_nhwc else mk("Transpose", ["u"], ["sr"], perm=[0, 2, 3, 1]))
    return wrap(src, target, before, after, [_image("image", True, TensorProto.UINT8)],
                _image("sr", True, TensorProto.UINT8), [_const("k255", 255.0), _const("k0", 0.0)])


def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> Build:
    """Input and output normalised as (x - mean) / std; the model inside sees [0, 1]."""
    def build(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
        mk = helper.make_node
        in_nhwc, out_nhwc = _layouts(src)
        before = [mk("Mul", ["x", "std_in"], ["xs"]), mk("Add", ["xs", "mean_in"], ["inner_in"])]
        after = [mk("Sub", ["inner_out", "mean_out"], ["ym"]), mk("Div", ["ym", "std_out"], ["y"])]
        consts = [_const(f"{k}_{side}", v, _channel_shape(nhwc)) for side, nhwc in (("in", in_nhwc), ("out", out_nhwc))
                  for k, v in (("mean", mean), ("std", std))]
        return wrap(src, target, before, after, [_image("x", in_nhwc)], _image("y", out_nhwc), consts)
    return build


def _rank3(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    mk = helper.make_node
    in_nhwc, out_nhwc = _layouts(src)
    before = [mk("Unsqueeze", ["x", "axis0"], ["inner_in"])]
    after = [mk("Squeeze", ["inner_out", "axis0"], ["y"])]
    return wrap(src, target, before, after, [_image("x", in_nhwc, rank=3)], _image("y", out_nhwc, rank=3),
                [numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")])


def _bicubic_input(src: Path, target: Path, crops: list[np.ndarray]) -> Path:
    """A second input, the bicubic upscale of the LR, added as a residual path: the output is
    the model's plus (given upscale - the graph's own bilinear upscale), so what is fed to the
    second input shows in the result."""
    mk = helper.make_node
    in_nhwc, out_nhwc = _layouts(src)
    scale = _scale_of(onnx.load(str(src)), crops[0], in_nhwc)
    factors = [1.0, scale, scale, 1.0] if in_nhwc else [1.0, 1.0, scale, scale]
    before = [mk("Identity", ["lr"], ["inner_in"])]
    after = [mk("Resize", ["lr", "", "scales"], ["up"], mode="linear"), mk("Sub", ["bicubic", "up"], ["d"])]
    if in_nhwc != out_nhwc:
        after.append(mk("Transpose", ["d"], ["dt"], perm=[0, 2, 3, 1] if out_nhwc else [0, 3, 1, 2]))
    after.append(mk("Add", ["inner_out", "dt" if in_nhwc != out_nhwc else "d"], ["sr"]))
    return wrap(src, target, before, after, [_image("lr", in_nhwc), _image("bicubic", in_nhwc)], _image("sr", out_nhwc),
                [_const("scales", factors, (4,))])


def _scale_of(model: onnx.ModelProto, crop: np.ndarray, nhwc: bool) -> int:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = crop.transpose(0, 2, 3, 1) if nhwc else crop
    return sess.run(None, {sess.get_inputs()[0].name: x})[0].shape[-2] // crop.shape[-2]


BASES = {"carn-m": 4, "imdn": 4, "span-x2-ch48": 2, "tf-style": 2}  # name -> scale


def base(name: str, folder: Path) -> Path:
    return tf_base(folder) if name == "tf-style" else zoo_base(name, folder)


def native(name: str) -> "torch.nn.Module":
    """The float PyTorch module of a base, NCHW RGB [0, 1] in and out."""
    if name == "tf-style":
            return TfStyle().eval()
    return _module(entry(name), None)[0].eval()


VARIANTS: dict[str, Build] = {
    "float": lambda src, target, crops: src,
    "qdq-tensor-s8": _static("QDQ", False, "QInt8"),
    "qdq-channel-u8": _static("QDQ", True, "QUInt8"),
    "qoperator": _static("QOperator", True, "QUInt8"),
    "dynamic": _dynamic,
    "fp16": _fp16,
    "ort-extended": _optimised("ORT_ENABLE_EXTENDED"),
    "ort-all": _optimised("ORT_ENABLE_ALL"),
    "onnxslim": _slim,
    "uint8-nhwc": _uint8_nhwc,
    "range-pm1": _affine((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": _affine(IMAGENET_MEAN, IMAGENET_STD),
    "rank3": _rank3,
    "bicubic-input": _bicubic_input,
}
