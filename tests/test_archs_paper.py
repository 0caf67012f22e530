"""The paper's architectures (Choi et al. 2019, Table 1) and the bicubic baseline.

Random weights throughout (the official checkpoints cannot be downloaded here), except CARN-M and
the Real-ESRGAN RRDBNet from the shared assets. The official key layouts are written out below
from the documentation, independently of the modules, so a module that drifts from them fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from sreval import exporters
from sreval.exporters.bicubic import cubic_resize
from sreval.exporters.common import ARCHS, ArchSpec, MeanShift, export_onnx, load_weights, read_checkpoint
from sreval.exporters.eusr import dcr_interleave
from sreval.errors import ModelError
from sreval.graphstats import graph_stats

# name: (Table 1 "# parameters", Table 1 "# layers", exact x4 graph weights, checkpoint weights)
TABLE1: dict[str, tuple[str, int, int, int | None]] = {
    "edsr": ("43.1M", 69, 43_089_923, None),
    "edsr_baseline": ("1.5M", 37, 1_517_571, None),
    "rcan": ("15.6M", 815, 15_592_355, None),
    "4pp_eusr": ("6.3M", 95, 3_699_971, 6_295_689),  # Table 1 counts the whole generator
    "esrgan": ("16.7M", 351, 16_697_987, None),
    "rrdb": ("16.7M", 351, 16_697_987, None),
    "carn": ("1.1M", 34, 1_111_875, 1_591_939),  # checkpoint adds the x2/x3 upsamplers
    "carn_m": ("0.3M", 43, 294_147, 414_787),
    "bicubic": ("0.0M", 0, 0, None),
}
PAPER = list(TABLE1)
GAN = {"esrgan", "4pp_eusr"}


# ----------------------------------------------------------------------------- official layouts


def _wb(*prefixes: str) -> Iterator[str]:
    for p in prefixes:
        yield p + ".weight"
        yield p + ".bias"


def edsr_keys(blocks: int) -> set[str]:
    """sanghyun-son/EDSR-PyTorch, x4."""
    body = [f"body.{i}.body.{j}" for i in range(blocks) for j in (0, 2)] + [f"body.{blocks}"]
    return set(_wb("sub_mean", "add_mean", "head.0", *body, "tail.0.0", "tail.0.2", "tail.1"))


def rcan_keys() -> set[str]:
    """yulunzhang/RCAN, x4: 10 groups x 20 RCABs."""
    convs = ["sub_mean", "add_mean", "head.0", "body.10", "tail.0.0", "tail.0.2", "tail.1"]
    for g in range(10):
        convs.append(f"body.{g}.body.20")
        for b in range(20):
            rcab = f"body.{g}.body.{b}.body"
            convs += [f"{rcab}.0", f"{rcab}.2", f"{rcab}.3.conv_du.0", f"{rcab}.3.conv_du.2"]
    return set(_wb(*convs))


def rrdb_keys(layout: str) -> set[str]:
    """BasicSR / Real-ESRGAN (`basicsr`) or xinntao/ESRGAN (`esrgan`) RRDBNet, 23 blocks."""
    dense = [(i, r, c) for i in range(23) for r in (1, 2, 3) for c in range(1, 6)]
    if layout == "basicsr":
        body = [f"body.{i}.rdb{r}.conv{c}" for i, r, c in dense]
        tail = ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    else:
        body = [f"RRDB_trunk.{i}.RDB{r}.conv{c}" for i, r, c in dense]
        tail = ["trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last"]
    return set(_wb("conv_first", *body, *tail))


def carn_keys(mobile: bool) -> set[str]:
    """nmhkahn/CARN-pytorch multi-scale checkpoints (SOURCES.md)."""
    convs = ["sub_mean.shifter", "add_mean.shifter", "entry", "exit"]
    convs += [f"upsample.{b}" for b in ("up2.body.0", "up3.body.0", "up4.body.0", "up4.body.3")]
    for b in (1, 2, 3):
        convs.append(f"c{b}.body.0")
        convs += [f"b{b}.c{c}.body.0" for c in (1, 2, 3)]
        if mobile:
            convs += [f"b{b}.b1.body.{j}" for j in (0, 2, 4)]
        else:
            convs += [f"b{b}.b{u}.body.{j}" for u in (1, 2, 3) for j in (0, 2)]
    return set(_wb(*convs))


def eusr_keys() -> set[str]:
    """Our own names (the official weights are TensorFlow), documented in exporters/eusr.py."""
    convs = ["first_conv", "shared.conv"]
    convs += [f"shared.blocks.{i}.conv{c}" for i in range(32) for c in (1, 2)]
    for s, stages in ((2, 1), (4, 2), (8, 3)):
        convs += [f"initial.x{s}.{i}.conv{c}" for i in (0, 1) for c in (1, 2)]
        convs.append(f"upscaling.x{s}.last")
        for i in range(stages):
            for k in range(4):
                m = f"upscaling.x{s}.eum.stages.{i}.{k}"
                convs += [f"{m}.conv", f"{m}.blocks.0.conv1", f"{m}.blocks.0.conv2"]
    return set(_wb(*convs))


OFFICIAL_KEYS: dict[str, Callable[[], set[str]]] = {
    "edsr": lambda: edsr_keys(32),
    "edsr_baseline": lambda: edsr_keys(16),
    "rcan": rcan_keys,
    "4pp_eusr": eusr_keys,
    "esrgan": lambda: rrdb_keys("basicsr"),
    "rrdb": lambda: rrdb_keys("basicsr"),
    "carn": lambda: carn_keys(mobile=False),
    "carn_m": lambda: carn_keys(mobile=True),
    "bicubic": set,
}


# ----------------------------------------------------------------------------- helpers


def built(name: str) -> nn.Module:
    """One seeded random x4 model per builder (esrgan and rrdb share one), for read-only tests."""
    return _built(ARCHS[name].build)


@cache
def _built(build: Callable[[int], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build(4).eval()


def random_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """Random tensors in the module's shapes; mean-shift weights stay diagonal (as official)."""
    gen = torch.Generator().manual_seed(1)
    out = {}
    for k, v in module.state_dict().items():
        t = torch.randn(v.shape, generator=gen) * 0.01
        if "mean" in k and k.endswith("weight"):
            t = torch.diag(1 + torch.rand(3, generator=gen)).view(3, 3, 1, 1)
        out[k] = t
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """These are many small convolutions: on a shared 2-core machine, two OpenMP threads that
    spin-wait on each other made this file 5x slower (user time 141 s vs 26 s at load 7)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Each paper model exported at most once per test session (the big ones take seconds)."""
    folder = tmp_path_factory.mktemp("paper_onnx")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            meta = {"sreval.weights_source": "random init (test)"}
            target = folder / f"{name}.onnx"
            done[name] = export_onnx(built(name), ARCHS[name], target, scale=4, metadata=meta)
        return done[name]

    return get


# ----------------------------------------------------------------------------- registry


def test_registry_has_paper_models() -> None:
    assert set(PAPER) <= set(exporters.ARCHS)
    for name in PAPER:
        spec = ARCHS[name]
        assert 4 in spec.scales and spec.paper
        assert spec.gan_trained == (name in GAN)
    assert {ARCHS[n].value_range for n in ("edsr", "edsr_baseline", "rcan", "4pp_eusr")} == {255.0}


# ----------------------------------------------------------------------------- module behaviour


@pytest.mark.parametrize("name", PAPER)
def test_forward_shape_and_input_gradient(name: str) -> None:
    spec, net = ARCHS[name], built(name)
    x = (torch.rand(1, 3, 8, 8) * spec.value_range).requires_grad_(True)
    y = net(x)
    assert y.shape == (1, 3, 32, 32)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PAPER)
def test_official_key_layout_loads_strictly(name: str) -> None:
    spec = ARCHS[name]
    torch.manual_seed(0)
    net = spec.build(4)
    assert set(net.state_dict()) == OFFICIAL_KEYS[name]()
    sd = random_state_dict(net)
    load_weights(net, spec, sd, "random")
    for k, v in net.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("name", PAPER)
def test_foreign_checkpoint_is_refused_naming_keys(name: str) -> None:
    other = "carn_m" if name != "carn_m" else "edsr_baseline"
    foreign = built(other).state_dict()
    pattern = rf"not a {name} checkpoint: missing keys \[.*unexpected keys \[\S+"
    with pytest.raises(ModelError, match=pattern):
        load_weights(ARCHS[name].build(4), ARCHS[name], foreign, f"{other}.pth")


# our RRDBNet names -> official ESRGAN (2019-) names / first-release sequential names
ESRGAN_NAMES = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1",
                "conv_up2": "upconv2", "conv_hr": "HRconv", "conv_last": "conv_last"}
ESRGAN_V0_NAMES = {"conv_first": "model.0", "conv_body": "model.1.sub.23", "conv_up1": "model.3",
                   "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}


@pytest.mark.parametrize("layout", ["esrgan", "esrgan_v0", "basicsr_dataparallel"])
def test_rrdb_accepts_official_esrgan_layouts(layout: str) -> None:
    spec = ARCHS["esrgan"]
    net = built("rrdb")
    ours = random_state_dict(net)
    if layout in ("esrgan", "esrgan_v0"):
        v0 = layout == "esrgan_v0"
        outer = ESRGAN_V0_NAMES if v0 else ESRGAN_NAMES
        theirs = {}
        for k, v in ours.items():
            head, _, rest = k.partition(".")
            if head == "body":  # body.i.rdbK.convJ.param
                i, rdb, conv, param = rest.split(".")
                trunk = f"model.1.sub.{i}" if v0 else f"RRDB_trunk.{i}"
                theirs[f"{trunk}.RDB{rdb[-1]}.{conv}" + (".0." if v0 else ".") + param] = v
            else:
                theirs[f"{outer[head]}.{rest}"] = v
        if not v0:
            assert set(theirs) == rrdb_keys("esrgan")
    else:
        theirs = {"module." + k: v for k, v in ours.items()}
    fresh = spec.build(4)
    load_weights(fresh, spec, theirs, layout)
    got = fresh.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ours.items())


def test_mean_shift_refuses_non_diagonal_weight() -> None:
    ms = MeanShift((0.4, 0.4, 0.4), 255.0, sign=-1)
    sd = {"weight": torch.ones(3, 3, 1, 1), "bias": torch.zeros(3)}
    with pytest.raises(ModelError, match="non-diagonal"):
        ms.load_state_dict(sd)
    ms.load_state_dict({"weight": 2 * torch.eye(3).view(3, 3, 1, 1), "bias": torch.ones(3)})
    assert torch.equal(ms(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 3.0))


def test_eusr_depth_to_space_is_tensorflow_order() -> None:
    outs = [torch.rand(2, 3, 4, 5) for _ in range(4)]
    y = dcr_interleave(outs)
    for dy in (0, 1):
        for dx in (0, 1):
            assert torch.equal(y[:, :, dy::2, dx::2], outs[2 * dy + dx])


# ----------------------------------------------------------------------------- Table 1


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER)
def test_table1_counts_from_exported_graph(name: str, exported: Callable[[str], Path]) -> None:
    table_params, table_convs, exact, checkpoint = TABLE1[name]
    proto = onnx.load(exported(name))
    stats = graph_stats(proto)
    assert (stats.params, stats.conv_layers) == (exact, table_convs)
    meta = {p.key: p.value for p in proto.metadata_props}
    shown = checkpoint if checkpoint is not None and name == "4pp_eusr" else exact
    assert f"{shown / 1e6:.1f}M" == table_params
    assert meta["sreval.params"] == str(exact)
    assert meta["sreval.conv_layers"] == str(table_convs)
    assert meta.get("sreval.params_checkpoint") == (None if checkpoint is None else str(checkpoint))
    assert meta["sreval.gan_trained"] == ("1" if name in GAN else "0")
    conventions = [meta[f"sreval.{k}"] for k in ("scale", "range", "color", "layout")]
    assert conventions == ["4", "1", "rgb", "nchw"]
    assert meta["sreval.arch"] == name and meta["sreval.weights_source"] == "random init (test)"
    assert [i.name for i in proto.graph.input] == ["lr"]
    assert [o.name for o in proto.graph.output] == ["sr"]
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # dynamic batch, height, width
    assert not any(n.op_type == "Identity" for n in proto.graph.node)


@pytest.mark.parametrize("name", ["carn_m", "4pp_eusr"])
def test_onnx2torch_converts_exports_exactly(name: str, exported: Callable[[str], Path]) -> None:
    import onnx2torch

    converted = onnx2torch.convert(onnx.load(exported(name))).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        ref = built(name)(x * ARCHS[name].value_range) / ARCHS[name].value_range
        got = converted(x)
    assert float((got - ref).abs().max()) <= 1e-5


def test_bicubic_is_one_matlab_style_resize(exported: Callable[[str], Path]) -> None:
    proto = onnx.load(exported("bicubic"))
    compute = [n for n in proto.graph.node if n.op_type != "Constant"]
    assert [n.op_type for n in compute] == ["Resize"]
    attrs = {a.name: helper.get_attribute_value(a) for a in compute[0].attribute}
    assert attrs["mode"] == b"cubic" and attrs["cubic_coeff_a"] == pytest.approx(-0.5)
    assert attrs["coordinate_transformation_mode"] == b"half_pixel"
    assert attrs["exclude_outside"] == 0
    # our torch resampler is ONNX Resize semantics: with a=-0.75 it is PyTorch's bicubic
    x = torch.rand(2, 3, 7, 10)
    ref = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert float((cubic_resize(x, 4.0, a=-0.75) - ref).abs().max()) < 1e-5


def test_bicubic_converts_exactly_with_sreval_converters(exported: Callable[[str], Path]) -> None:
    """Stock onnx2torch 1.5.15 ignores cubic_coeff_a (uses -0.75, off by ~0.08 here);
    sreval.convert's Resize converter honours it."""
    from sreval.convert import to_torch

    converted = to_torch(onnx.load(exported("bicubic")))
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        diff = float((converted(x) - built("bicubic")(x)).abs().max())
    assert diff <= 1e-5


# ----------------------------------------------------------------------------- export_onnx


class _TinyY(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


def test_export_native_y_convention(tmp_path: Path) -> None:
    spec = ArchSpec(name="tiny_y", build=lambda s: _TinyY(), channels="y", preupsampled=True)
    path = export_onnx(_TinyY(), spec, tmp_path / "y.onnx", scale=4, metadata={}, wrap=False)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    conventions = [meta[f"sreval.{k}"] for k in ("color", "preupsampled", "range")]
    assert conventions == ["y", "1", "1"]
    assert meta["sreval.params"] == "10" and meta["sreval.conv_layers"] == "1"


class _TwoLevels(nn.Module):
    """LapSRN-style: returns the x2 and the x4 image."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x2 = self.up(x)
        return x2, self.up(x2)


def test_export_several_outputs_names_the_chosen_one_sr(tmp_path: Path) -> None:
    spec = ArchSpec(name="two_levels", build=lambda s: _TwoLevels(), channels="y")
    path = export_onnx(_TwoLevels(), spec, tmp_path / "t.onnx", scale=4, metadata={}, wrap=False)
    proto = onnx.load(path)
    assert [o.name for o in proto.graph.output] == ["sr_0", "sr"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["sreval.output"] == "1" and meta["sreval.conv_layers"] == "2"
    assert meta["sreval.params"] == "17"  # one shared 4x4 kernel + bias, counted once


class _Cheat(nn.Module):
    """Exports a different function than it computes: the parity check must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y + 1 if torch.onnx.is_in_onnx_export() else y


def test_export_parity_failure_leaves_no_file(tmp_path: Path) -> None:
    spec = ArchSpec(name="cheat", build=lambda s: _Cheat(), scales=(1,))
    with pytest.raises(ModelError, match="onnxruntime differs"):
        export_onnx(_Cheat(), spec, tmp_path / "c.onnx", scale=1, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_contradicting_metadata(tmp_path: Path) -> None:
    spec = ArchSpec(name="cheat", build=lambda s: _Cheat(), scales=(1,))
    with pytest.raises(ModelError, match="contradicts"):
        export_onnx(_Cheat(), spec, tmp_path / "c.onnx", scale=1, metadata={"sreval.scale": "2"})
    with pytest.raises(ModelError, match="no x4"):
        export_onnx(_Cheat(), spec, tmp_path / "c.onnx", scale=4, metadata={})


def test_graph_stats_counts_shared_and_constant_weights_once() -> None:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    mat = helper.make_tensor("m", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    nodes = [
        helper.make_node("Identity", ["w"], ["w_copy"]),
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w_copy"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Constant", [], ["m_const"], value=mat),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("MatMul", ["c", "m_const"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[w],
    )
    stats = graph_stats(helper.make_model(graph))
    assert (stats.params, stats.conv_layers) == (18 + 16, 2)


# ----------------------------------------------------------------------------- real weights


def test_carn_m_real_weights_reproduce_published_psnr(assets: Path) -> None:
    from sreval.io import read_image
    from sreval.metrics import psnr

    spec = ARCHS["carn_m"]
    sd = read_checkpoint(assets / "weights/carn_m/carn_m.pth")
    assert set(sd) == carn_keys(mobile=True)  # the documented layout is the real one
    net = spec.build(4).eval()
    load_weights(net, spec, sd, "carn_m.pth")
    scores = []
    for hr_path in sorted((assets / "datasets/Set5/HR").glob("*.png")):
        lr = read_image(assets / "datasets/Set5/LR_bicubic/X4" / f"{hr_path.stem}x4.png")
        with torch.no_grad():
            sr = net(torch.from_numpy(lr).permute(2, 0, 1)[None]).clamp(0, 1)
        sr8 = (sr[0].permute(1, 2, 0).numpy() * 255).round() / 255
        scores.append(psnr(sr8, read_image(hr_path), y=True, shave=4))
    assert len(scores) == 5
    assert float(np.mean(scores)) == pytest.approx(31.88, abs=0.05)  # SOURCES.md; paper 31.92


def test_realesrgan_weights_load_into_rrdbnet(assets: Path) -> None:
    spec = ARCHS["rrdb"]
    sd = read_checkpoint(assets / "weights/realesrgan_x4plus/RealESRGAN_x4plus_fp16_state_dict.pth")
    assert set(sd) == rrdb_keys("basicsr")
    net = spec.build(4).eval()
    load_weights(net, spec, sd, "RealESRGAN_x4plus")
    with torch.no_grad():
        y = net(torch.rand(1, 3, 8, 8))
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_registered_architecture_builds_loads_and_upscales(name: str) -> None:
    """timm-style over the architecture registry: a new ArchSpec is tested here without a new
    test. Its own state dict loads strictly through load_weights (the key layout it declares),
    and a forward pass gives the upscaled image it promises."""
    spec = ARCHS[name]
    scale = min(spec.scales)
    net = spec.build(scale).eval()
    load_weights(net, spec, {k: v.clone() for k, v in net.state_dict().items()}, "its own state dict")
    side = max(12, int(spec.extra.get("min_input", "1")))
    x = torch.rand(1, 3 if spec.channels == "rgb" else 1, side, side) * spec.value_range
    with torch.no_grad():
        out = net(x)
    sizes = [tuple(y.shape[-2:]) for y in (out if isinstance(out, (list, tuple)) else [out])]
    want = side if spec.preupsampled else side * scale
    assert (want, want) in sizes, sizes
