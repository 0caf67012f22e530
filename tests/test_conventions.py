"""Third-party conventions: every one exported by our own code WITHOUT sreval metadata (a
foreign file), evaluated through sreval, and checked against a direct onnxruntime computation
written here independently of the adapter (numpy, cv2, a raw InferenceSession)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn
from torch.nn import functional as F

from sreval import parity
from sreval.data import load_dataset
from sreval.io import imresize, quantize, rgb_to_ycbcr, write_image, ycbcr_to_rgb
from sreval.commands import attack, evaluate
from sreval.metrics import psnr
from sreval.conventions import COLORS, Conventions, channels_of
from sreval.model import SRModel
from sreval.runtime import COLOR_SPACES, ramp, tile_starts
from tests.tiny import Scaled

PSNR_TOL = 0.02  # dB: torch vs onnxruntime differ by < 1e-4, a few 8-bit roundings at most


# ----------------------------------------------------------------------------- tiny upscalers


def _small_init(module: nn.Module, seed: int, std: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


class Up(nn.Module):
    """A plausible tiny upscaler: bilinear upsampling plus a small residual from two convs
    (`kernel=1`: nearest upsampling and 1x1 convs, no spatial context at all)."""

    def __init__(self, scale: int, ch: int = 3, seed: int = 0, kernel: int = 3):
        super().__init__()
        self.scale, self.mode = scale, "bilinear" if kernel > 1 else "nearest"
        self.c1 = nn.Conv2d(ch, 8, kernel, padding=kernel // 2)
        self.c2 = nn.Conv2d(8, ch * scale * scale, kernel, padding=kernel // 2)
        self.shuffle = nn.PixelShuffle(scale)
        _small_init(self, seed)

    def forward(self, x: Tensor) -> Tensor:
        skip = F.interpolate(x, scale_factor=self.scale, mode=self.mode)
        return skip + self.shuffle(self.c2(F.relu(self.c1(x))))


class SameSize(nn.Module):
    """VDSR-like: a residual on the (pre-upsampled) input, same size out."""

    def __init__(self, seed: int = 1):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)
        _small_init(self, seed, std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(F.relu(self.c1(x)))


class Pyramid(nn.Module):
    """LapSRN-like: returns (x2, x4)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = Up(2, ch=1, seed=2), Up(2, ch=1, seed=3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        hr2 = self.l1(x)
        return hr2, self.l2(hr2)


def export(module: nn.Module, path: Path, *, channels: int = 3, nhwc: bool = False, half: bool = False,
           fixed_hw: tuple[int, int] | None = None, fixed_batch: bool = False) -> Path:
    """torch.onnx.export (legacy, opset 17), no sreval metadata: a foreign file."""
    module = module.eval()
    h, w = fixed_hw or (16, 16)
    x = torch.rand(1, h, w, channels) if nhwc else torch.rand(1, channels, h, w)
    if half:
        module, x = module.half(), x.half()
    with torch.no_grad():
        y = module(x)
    outs = [f"out{i}" for i in range(len(y) if isinstance(y, tuple) else 1)]
    axes: dict[int, str] = {} if fixed_batch else {0: "batch"}
    if fixed_hw is None:
        axes |= {1: "h", 2: "w"} if nhwc else {2: "h", 3: "w"}
    dyn = {n: axes for n in ["lr", *outs]} if axes else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["lr"],
                          output_names=outs, dynamic_axes=dyn)
    return path


def tf_style_espcn(path: Path, scale: int = 3, seed: int = 4, layout: str = "nhwc", out_layout: str = "nhwc") -> Path:
    """An OpenCV-zoo-style TensorFlow graph built with onnx.helper: NHWC Y input, Transpose,
    a conv whose DCR DepthToSpace gives nearest upsampling plus a small residual, Transpose
    back to NHWC. Dynamic batch/height/width. `layout` / `out_layout` nchw drop the first /
    last Transpose (OpenCV's zoo files read NHWC and give NCHW)."""
    rng = np.random.default_rng(seed)
    s2 = scale * scale
    w = rng.normal(0, 0.02, (s2, 1, 3, 3)).astype(np.float32)
    w[:, 0, 1, 1] += 1.0  # DCR channel (i*s + j) holds sub-pixel (i, j): all copy the centre
    b = rng.normal(0, 0.01, (s2,)).astype(np.float32)
    first = "nchw" if layout == "nchw" else "IteratorGetNext"
    out = "NCHW_output" if out_layout == "nchw" else "NHWC_output"
    nodes = [
        helper.make_node("Transpose", ["IteratorGetNext"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["conv"], ["d2s" if out_layout == "nhwc" else out], blocksize=scale,
                         mode="DCR"),
        helper.make_node("Transpose", ["d2s"], ["NHWC_output"], perm=[0, 2, 3, 1]),
    ]
    nodes = nodes[layout == "nchw":len(nodes) - (out_layout == "nchw")]
    in_dims = ["n", 1, "h", "w"] if layout == "nchw" else ["n", "h", "w", 1]
    out_dims = ["n", 1, "H", "W"] if out_layout == "nchw" else ["n", "H", "W", 1]
    graph = helper.make_graph(
        nodes, "espcn_like",
        [helper.make_tensor_value_info(first, TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    onnx.save(model, path)
    return path


# ----------------------------------------------------------------------------- direct computation


def _ycc(img: np.ndarray, color: str) -> np.ndarray:
    """HxWx3 RGB -> (Y, Cb, Cr) of the convention, computed without sreval.model."""
    if color == "y":
        return rgb_to_ycbcr(img)
    ycrcb = cv2.cvtColor(np.ascontiguousarray(img[:, :, ::-1], dtype=np.float32), cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, [0, 2, 1]]


def _rgb(ycc: np.ndarray, color: str) -> np.ndarray:
    if color == "y":
        return ycbcr_to_rgb(ycc)
    bgr = cv2.cvtColor(np.ascontiguousarray(ycc[:, :, [0, 2, 1]], dtype=np.float32), cv2.COLOR_YCrCb2BGR)
    return bgr[:, :, ::-1]


def direct_sr(path: Path, lr: np.ndarray, *, scale: int, range_: float = 1.0, color: str = "rgb",
              layout: str = "nchw", pre: bool = False, output: int = 0, half: bool = False,
              out_layout: str | None = None, inputs: dict[str, str] | None = None) -> np.ndarray:
    """The SR image the convention defines, by hand: a raw onnxruntime session and numpy.
    `inputs` are the values of the model's other inputs (scalars, by name)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ycc = _ycc(lr, color) if color in ("y", "yfull") else None
    plane = ycc[:, :, :1] if ycc is not None else (lr[:, :, ::-1] if color == "bgr" else lr)
    if pre:
        plane = imresize(plane, float(scale))
    arr = plane.transpose(2, 0, 1)[None] if layout == "nchw" else plane[None]
    arr = (arr * range_).astype(np.float16 if half else np.float32)
    feed = {sess.get_inputs()[0].name: arr}
    for i in sess.get_inputs()[1:]:
        feed[i.name] = np.array(float((inputs or {})[i.name]), dtype=np.int64 if i.type == "tensor(int64)" else np.float32)
    out = np.asarray(sess.run(None, feed)[output], dtype=np.float64) / range_
    img = out[0].transpose(1, 2, 0) if (out_layout or layout) == "nchw" else out[0]
    if ycc is not None:
        chroma = imresize(ycc[:, :, 1:], size=img.shape[:2])
        img = _rgb(np.concatenate([img, chroma], axis=2).astype(np.float32), color)
    elif color == "bgr":
        img = img[:, :, ::-1]
    return quantize(np.clip(img, 0.0, 1.0).astype(np.float32))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two natural 96x84 HR crops (multiples of 2, 3 and 4); LR made by the loader."""
    root = tmp_path_factory.mktemp("conv") / "set"
    (root / "HR").mkdir(parents=True)
    for s in load_dataset("default", 1, limit=2):
        h, w = s.hr.shape[:2]
        write_image(root / "HR" / f"{s.name}.png", s.hr[(h - 96) // 2:(h + 96) // 2, (w - 84) // 2:(w + 84) // 2])
    return root


def check_against_direct(path: Path, data: Path, tmp: Path, *, overrides: dict[str, Any],
                         expect: dict[str, Any], direct: dict[str, Any], runtime: str = "auto") -> dict:
    report = evaluate(path, data, out=tmp / "run", device="cpu", conventions=overrides,
                              runtime=runtime)
    conv = report["model"]["conventions"]
    for k, v in expect.items():
        assert conv[k] == v, (k, conv)
    scale = conv["scale"]
    for sample, row in zip(load_dataset(data, scale), report["results"]):
        ref = psnr(direct_sr(path, sample.lr, scale=scale, **direct), sample.hr, y=True, shave=scale)
        assert abs(row["psnr_sr"] - ref) <= PSNR_TOL, (sample.name, row["psnr_sr"], ref)
        assert row["psnr_sr"] > 20.0  # a real upscale, not garbage that happens to agree
    return report


# ----------------------------------------------------------------------------- the conventions


def test_plain_rgb_probe_and_sources(tmp_path: Path, data: Path) -> None:
    p = export(Up(2), tmp_path / "rgb.onnx")
    rep = check_against_direct(p, data, tmp_path, overrides={}, expect={"scale": 2, "color": "rgb"},
                               direct={})
    src = rep["model"]["convention_sources"]
    assert src["scale"] == "shape" and src["output"] == "shape"
    assert rep["config"]["runtime"] == "torch" and rep["model"]["parity"]["max_diff"] <= 1e-4


@pytest.mark.parametrize("kw,overrides,direct", [
    (dict(value_range=255.0), {"range": 255}, {"range_": 255.0}),
    (dict(bgr=True), {"color": "bgr"}, {"color": "bgr"}),
    (dict(nhwc=True), {}, {"layout": "nhwc"}),
    (dict(value_range=255.0, bgr=True, nhwc=True), {"range": 255, "color": "bgr"},
     {"range_": 255.0, "color": "bgr", "layout": "nhwc"}),
])
def test_range_colour_layout(tmp_path: Path, data: Path, kw: dict, overrides: dict, direct: dict) -> None:
    p = export(Scaled(Up(2), **kw), tmp_path / "m.onnx", nhwc=kw.get("nhwc", False))
    rep = check_against_direct(p, data, tmp_path, overrides=overrides, expect={"scale": 2}, direct=direct)
    src = rep["model"]["convention_sources"]
    assert all(src[k] == "override" for k in overrides)
    if kw.get("nhwc"):
        assert rep["model"]["conventions"]["layout"] == "nhwc" and src["layout"] == "shape"


@pytest.mark.parametrize("color", ["y", "yfull"])
def test_y_only(tmp_path: Path, data: Path, color: str) -> None:
    p = export(Up(4, ch=1), tmp_path / "y.onnx", channels=1)
    over = {"color": color} if color == "yfull" else {}
    rep = check_against_direct(p, data, tmp_path, overrides=over, expect={"color": color, "scale": 4},
                               direct={"color": color})
    source = rep["model"]["convention_sources"]["color"]
    assert source == "override" if over else source.startswith("shape: one channel, studio-range Y")


def test_y_studio_and_full_range_differ(tmp_path: Path, data: Path) -> None:
    """Guards that the two Y conventions are really different transforms (not aliases)."""
    x = torch.rand(1, 3, 8, 8)
    from sreval.io import to_ycc

    assert (to_ycc(x, "y")[:, 0] - to_ycc(x, "yfull")[:, 0]).abs().max() > 0.02


def test_preupsampled_y(tmp_path: Path, data: Path) -> None:
    p = export(SameSize(), tmp_path / "vdsr_like.onnx", channels=1)
    with pytest.raises(Exception, match="pre-upsampled"):
        SRModel(p, device="cpu")  # output of the input's size: the scale must be given
    rep = check_against_direct(p, data, tmp_path, overrides={"scale": 3},
                               expect={"preupsampled": True, "scale": 3}, direct={"color": "y", "pre": True})
    assert rep["model"]["convention_sources"]["preupsampled"] == "shape"


def test_two_outputs_choose_by_scale(tmp_path: Path, data: Path) -> None:
    p = export(Pyramid(), tmp_path / "lap_like.onnx", channels=1)
    check_against_direct(p, data, tmp_path / "x4", overrides={}, expect={"scale": 4, "output": 1},
                         direct={"color": "y", "output": 1})
    check_against_direct(p, data, tmp_path / "x2", overrides={"scale": 2}, expect={"scale": 2, "output": 0},
                         direct={"color": "y", "output": 0})
    m = SRModel(p, device="cpu", output=0)  # explicit: the x2 output, scale read off it
    assert m.conventions.scale == 2 and m.sources["output"] == "override"
    with pytest.raises(Exception, match="no output at x3"):
        SRModel(p, device="cpu", scale=3)


def test_float16_model(tmp_path: Path, data: Path) -> None:
    p = export(Up(2), tmp_path / "half.onnx", half=True)
    m = SRModel(p, device="cpu")
    assert m.conventions.dtype == "float16"
    par = m.check_parity()
    assert par.tol == pytest.approx(parity.TOL_FP16) and par.max_diff <= par.tol and par.precision == "fp16"
    x = torch.rand(1, 3, 10, 12, requires_grad=True)
    m.torch()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # fp16 rounding moves a few pixels by one grey level: a looser PSNR tolerance
    report = evaluate(p, data, out=tmp_path / "run", device="cpu", conventions={"range": 1})
    for sample, row in zip(load_dataset(data, 2), report["results"]):
        ref = psnr(direct_sr(p, sample.lr, scale=2, half=True), sample.hr, y=True, shave=2)
        assert abs(row["psnr_sr"] - ref) <= 0.1


def test_tf_style_nhwc_dcr_graph_yfull(tmp_path: Path, data: Path) -> None:
    p = tf_style_espcn(tmp_path / "espcn_like.onnx")
    rep = check_against_direct(p, data, tmp_path, overrides={"color": "yfull"},
                               expect={"layout": "nhwc", "scale": 3, "color": "yfull"},
                               direct={"color": "yfull", "layout": "nhwc"})
    assert rep["model"]["convention_sources"]["layout"] == "shape"  # Transpose(0,3,1,2) first
    assert rep["config"]["runtime"] == "torch"


@pytest.mark.parametrize("layout, out_layout", [("nhwc", "nchw"), ("nchw", "nhwc")])
def test_mixed_layouts(tmp_path: Path, data: Path, layout: str, out_layout: str) -> None:
    """NHWC in and NCHW out (tf2onnx, as OpenCV's dnn_superres zoo), and the reverse: the
    output's layout is read from its shape."""
    p = tf_style_espcn(tmp_path / "mixed.onnx", layout=layout, out_layout=out_layout)
    for overrides in ({"color": "yfull"}, {"color": "yfull", "layout": layout}):
        rep = check_against_direct(p, data, tmp_path, overrides=overrides,
                                   expect={"layout": layout, "output_layout": out_layout, "scale": 3},
                                   direct={"color": "yfull", "layout": layout, "out_layout": out_layout})
        assert rep["model"]["convention_sources"]["output_layout"] == "shape"
        assert rep["config"]["runtime"] == "torch"


def test_all_dynamic_dims_probe_finds_layout_and_channels(tmp_path: Path) -> None:
    """An input declared [?, ?, ?, ?] and no telling first node: the probe tries the plausible
    (layout, channels) pairs and keeps the one that runs."""
    p = export(Scaled(Up(2), nhwc=True), tmp_path / "m.onnx", nhwc=True)
    m = onnx.load(p)
    for d in m.graph.input[0].type.tensor_type.shape.dim:
        d.dim_param = "any"
    mul = helper.make_node("Mul", ["raw", "one"], ["lr"])
    m.graph.input[0].name = "raw"
    m.graph.node.insert(0, mul)
    m.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    onnx.save(m, p)
    model = SRModel(p, device="cpu", range=1)
    assert model.conventions.layout == "nhwc" and model.conventions.color == "rgb"


# ----------------------------------------------------------------------------- fixed shapes


def test_tile_geometry() -> None:
    assert tile_starts(10, 16, 4) == [0]
    starts = tile_starts(40, 16, 4)
    assert starts[0] == 0 and starts[-1] == 24
    assert all(b - a <= 12 for a, b in zip(starts, starts[1:]))
    w = ramp(16, 4, torch.device("cpu"))
    assert w.min() > 0 and w.max() == 1 and w[0] < w[4]


@pytest.mark.parametrize("kernel,tol", [(1, 1e-4), (3, 0.15)])
def test_fixed_input_shape_is_tiled(tmp_path: Path, data: Path, kernel: int, tol: float) -> None:
    """A model that only takes 16x16: sreval tiles the 48x42 LR with overlap and blends. A
    pointwise model gives exactly the whole-image result; a 3x3 one nearly (tile borders)."""
    net = Up(2, kernel=kernel)
    fixed = export(net, tmp_path / "fixed.onnx", fixed_hw=(16, 16))
    whole = export(net, tmp_path / "whole.onnx")
    m = SRModel(fixed, device="cpu", range=1)
    assert m.conventions.tile == (16, 16) and m.conventions.scale == 2
    report = evaluate(fixed, data, out=tmp_path / "run", device="cpu", conventions={"range": 1})
    assert report["model"]["conventions"]["tile"] == [16, 16]
    for sample, row in zip(load_dataset(data, 2), report["results"]):
        ref = psnr(direct_sr(whole, sample.lr, scale=2), sample.hr, y=True, shave=2)
        assert abs(row["psnr_sr"] - ref) <= tol, (row["psnr_sr"], ref)
    x = torch.rand(1, 3, 20, 37, requires_grad=True)  # smaller than two tiles high: padded
    y = m.torch()(x)
    assert y.shape == (1, 3, 40, 74)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().min() > 0  # every input pixel gets a gradient
    with torch.no_grad():
        assert (m.ort()(x) - y).abs().max() <= 1e-4


def test_fixed_batch_is_looped(tmp_path: Path) -> None:
    p = export(Up(2), tmp_path / "b1.onnx", fixed_batch=True)
    m = SRModel(p, device="cpu", range=1)
    assert m.conventions.batch == 1
    m.check_parity()  # runs a batch of 2
    x = torch.rand(3, 3, 9, 11)
    with torch.no_grad():
        ref = torch.cat([m.ort()(x[i:i + 1]) for i in range(3)])
        assert (m.ort()(x) - ref).abs().max() == 0
        assert (m.torch()(x) - ref).abs().max() <= 1e-4


def test_conventions_validate() -> None:
    with pytest.raises(Exception, match="color"):
        Conventions(scale=2, color="hsv")
    with pytest.raises(Exception, match="range"):
        Conventions(scale=2, range=2.0)
    with pytest.raises(Exception, match="tile"):
        Conventions(scale=2, tile=(0, 4))
    assert Conventions(scale=2, tile=(16, None)).as_dict()["tile"] == [16, None]


def test_override_that_contradicts_the_shape_is_refused(tmp_path: Path) -> None:
    p = export(Up(2), tmp_path / "rgb.onnx")
    with pytest.raises(Exception, match="3 channels"):
        SRModel(p, device="cpu", color="y")
    with pytest.raises(Exception, match="no output at x3"):
        SRModel(p, device="cpu", scale=3)
    with pytest.raises(Exception, match="unknown convention"):
        SRModel(p, device="cpu", colour="rgb")


def test_every_colour_convention_has_its_colour_space() -> None:
    """The light list of names (validation, --help) and the adapter's colour spaces agree."""
    assert tuple(COLOR_SPACES) == COLORS
    assert all(COLOR_SPACES[c].channels == channels_of(c) for c in COLORS)


def unbatched(src: Path, dst: Path, layout: str) -> Path:
    """The model as some deployments ship it: an input and output without a batch axis, C,H,W
    or H,W,C (the original graph behind an Unsqueeze, a Squeeze and, for HWC, Transposes)."""
    m = onnx.load(str(src))
    g = m.graph
    inp, out = g.input[0].name, g.output[0].name
    for n in g.node:
        n.input[:] = ["b_in" if v == inp else v for v in n.input]
        n.output[:] = ["b_out" if v == out else v for v in n.output]
    g.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    mk = onnx.helper.make_node
    if layout == "chw":
        pre, post = [mk("Unsqueeze", [inp, "ax0"], ["b_in"])], [mk("Squeeze", ["b_out", "ax0"], [out])]
    else:
        pre = [mk("Transpose", [inp], ["t_in"], perm=[2, 0, 1]), mk("Unsqueeze", ["t_in", "ax0"], ["b_in"])]
        post = [mk("Squeeze", ["b_out", "ax0"], ["t_out"]), mk("Transpose", ["t_out"], [out], perm=[1, 2, 0])]
    nodes = [*pre, *g.node, *post]
    del g.node[:]
    g.node.extend(nodes)
    for vi, shape in ((g.input[0], ["c", "h", "w"]), (g.output[0], ["c", "H", "W"])):
        shape = [3 if d == "c" else d for d in shape]
        vi.type.tensor_type.shape.Clear()
        for d in (shape if layout == "chw" else shape[1:] + shape[:1]):
            dim = vi.type.tensor_type.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_an_input_without_a_batch_axis_is_fed_one_image_at_a_time(tmp_path: Path, data: Path, layout: str) -> None:
    plain = export(Up(2), tmp_path / "plain.onnx")
    path = unbatched(plain, tmp_path / f"{layout}.onnx", layout)
    report = evaluate(path, data, out=tmp_path / "run", device="cpu")
    conv, src = report["model"]["conventions"], report["model"]["convention_sources"]
    assert conv["batch"] == 1 and conv["layout"] == ("nchw" if layout == "chw" else "nhwc") and "rank 3" in src["batch"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for sample, row in zip(load_dataset(data, 2), report["results"], strict=True):
        arr = sample.lr.transpose(2, 0, 1) if layout == "chw" else sample.lr
        out = np.asarray(sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(arr)})[0], np.float64)
        sr = quantize(np.clip(out.transpose(1, 2, 0) if layout == "chw" else out, 0, 1).astype(np.float32))
        assert abs(row["psnr_sr"] - psnr(sr, sample.hr, y=True, shave=2)) <= PSNR_TOL
    attacked = [attack(p, data, out=tmp_path / f"a{i}", device="cpu", alpha="8/255", steps=2, sanity=False)["results"]
                for i, p in enumerate((plain, path))]
    assert [r["psnr_sr"] for r in attacked[1]] == pytest.approx([r["psnr_sr"] for r in attacked[0]], abs=0.01)


def test_the_y_flavour_of_a_one_channel_model_is_said(tmp_path: Path) -> None:
    """Studio and full-range Y cannot be told apart by any score: the source says which was
    taken and names the option; a tf2onnx graph (OpenCV's dnn_superres zoo) takes full range."""
    plain = SRModel(export(Up(2, ch=1), tmp_path / "y.onnx", channels=1), device="cpu")
    assert plain.conventions.color == "y" and "--color yfull" in plain.sources["color"]
    proto = onnx.load(str(tmp_path / "y.onnx"))
    proto.producer_name = "tf2onnx"
    onnx.save(proto, str(tmp_path / "tf.onnx"))
    tf = SRModel(tmp_path / "tf.onnx", device="cpu")
    assert tf.conventions.color == "yfull" and "--color y " in tf.sources["color"]
    assert SRModel(tmp_path / "tf.onnx", device="cpu", color="y").conventions.color == "y"
