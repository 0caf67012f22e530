"""SRModel: loading, conventions, parity, gradients, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sreval.errors import ModelError, ParityError
from sreval.model import SRModel
from sreval.zoo import open_model as load_model
from tests.tiny import Scaled, TinySR, export


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny_legacy.onnx")


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=3), tmp_path_factory.mktemp("m") / "tiny_dynamo.onnx", dynamo=True)


@pytest.mark.parametrize("which,scale", [("legacy", 2), ("dynamo", 3)])
def test_load_probes_scale_and_passes_parity(which: str, scale: int, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(which)
    m = load_model(path, device="cpu")
    assert m.conventions.scale == scale
    assert m.conventions.color == "rgb" and m.conventions.range == 1.0
    p = m.check_parity()
    assert p.ok and p.max_diff <= 1e-4 and p.grad_l1 > 0
    assert len(m.sha256) == 64


def test_torch_module_is_frozen_eval_and_matches_native(legacy: Path) -> None:
    native = TinySR(scale=2).eval()
    m = SRModel(legacy, device="cpu")
    t = m.torch()
    assert not t.training
    assert all(not p.requires_grad for p in t.parameters())
    x = torch.rand(2, 3, 9, 13)
    assert torch.allclose(t(x), native(x), atol=1e-5)


def test_metadata_scale_wins_over_probe(tmp_path: Path) -> None:
    p = export(TinySR(scale=2), tmp_path / "m.onnx", metadata={"sreval.scale": "2", "sreval.name": "tiny"})
    m = SRModel(p, device="cpu")
    assert m.conventions.scale == 2 and m.describe()["name"] == "tiny"


@pytest.mark.parametrize("kw,meta", [
    (dict(value_range=255.0), {"sreval.range": "255"}),
    (dict(bgr=True), {"sreval.color": "bgr"}),
    (dict(nhwc=True), {"sreval.layout": "nhwc"}),
])
def test_adapter_undoes_each_convention(tmp_path: Path, kw: dict, meta: dict) -> None:
    native = TinySR(scale=2).eval()
    p = export(Scaled(TinySR(scale=2), **kw), tmp_path / "c.onnx", nhwc=kw.get("nhwc", False), metadata=meta)
    m = load_model(p, device="cpu")
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(m.torch()(x), native(x), atol=1e-4)
        assert torch.allclose(m.ort()(x), native(x), atol=1e-4)


def test_override_beats_metadata(tmp_path: Path) -> None:
    p = export(Scaled(TinySR(scale=2), value_range=255.0), tmp_path / "r.onnx")
    m = SRModel(p, device="cpu", range=255.0)
    assert m.conventions.range == 255.0


def test_missing_truncated_and_non_onnx_files_are_refused(tmp_path: Path, legacy: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        SRModel(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all \x00\xff")
    with pytest.raises(ModelError, match="not an ONNX model"):
        SRModel(bad)
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    with pytest.raises(ModelError):
        SRModel(trunc)


class NotSR(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=1.5, mode="nearest")


class Flat(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Explodes(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x / (x - x), scale_factor=2.0)


@pytest.mark.parametrize("module,match", [
    (NotSR(), "integer multiple"),
    (Flat(), "not an image|not an SR model"),
    (Explodes(), "NaN or Inf"),
])
def test_models_that_are_not_sr_are_refused(tmp_path: Path, module: torch.nn.Module, match: str) -> None:
    p = export(module, tmp_path / "x.onnx")
    with pytest.raises(ModelError, match=match):
        load_model(p, device="cpu")


def test_parity_failure_says_by_how_much(legacy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = SRModel(legacy, device="cpu")
    t = m.torch()
    with torch.no_grad():
        t.core.state_dict()[next(k for k in t.core.state_dict() if k.endswith("bias"))].add_(0.01)
    with pytest.raises(ParityError, match=r"differs from onnxruntime: max \|torch - onnxruntime\| = [0-9.e-]+ \(tol 0.0001\), fp32 graph, as a fraction of the output range"):
        m.check_parity()


def test_channels_last_fast_path_equals_contiguous(legacy: Path) -> None:
    """The default channels_last layout must not change a number, forward or backward."""
    fast = SRModel(legacy, device="cpu", channels_last=True).torch()
    plain = SRModel(legacy, device="cpu", channels_last=False).torch()
    x = torch.rand(2, 3, 11, 13)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = fast(xa), plain(xb)
    assert (ya - yb).abs().max().item() <= 1e-5
    (ga,) = torch.autograd.grad(ya.square().sum(), xa)
    (gb,) = torch.autograd.grad(yb.square().sum(), xb)
    assert (ga - gb).abs().max().item() <= 1e-5


class MixesTheBatch(torch.nn.Module):
    """Wrong at batch 2 without an error: a statistic over the whole batch (as an export that
    bakes batch 1 into a Reshape gives)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") + 0.1 * x.mean()


class FailsOnABatch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        return up.reshape(1, 3, up.shape[2], up.shape[3])  # batch 1 baked in


@pytest.mark.parametrize("module, says", [(MixesTheBatch(), "differs from the two images alone"),
                                          (FailsOnABatch(), "fails on a batch of 2")])
def test_batch_dependence_is_found_and_images_run_alone(tmp_path: Path, module: torch.nn.Module, says: str) -> None:
    path = export(module, tmp_path / "m.onnx")
    m = SRModel(path, device="cpu")
    assert m.conventions.batch == 1 and says in m.sources["batch"]
    m.check_parity()
    x = torch.rand(3, 3, 9, 11)
    with torch.no_grad():
        got = m.torch()(x)
    alone = torch.cat([module(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(got, alone, atol=1e-5), "each image as if it were alone"


def test_a_batch_independent_model_keeps_any_batch(legacy: Path) -> None:
    m = SRModel(legacy, device="cpu")
    assert m.conventions.batch is None and "any" in m.sources["batch"]


def export_dynamic(module: torch.nn.Module, path: Path, side: int) -> Path:
    """A TorchScript export with dynamic batch and size, from a side x side example."""
    axes = {0: "b", 2: "h", 3: "w"}
    with torch.no_grad():
        torch.onnx.export(module, (torch.rand(1, 3, side, side),), str(path), dynamo=False, opset_version=17,
                          input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes})
    return path


class NeedsASize(torch.nn.Module):
    """Reflect padding of 24: refuses inputs of 24 pixels or fewer, as window and
    reflect-padded models refuse small ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pad(x, (24, 24, 24, 24), mode="reflect")
        y = torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest")
        return y[..., 48:-48, 48:-48]


class NeedsSixteen(torch.nn.Module):
    """Reflect padding of 15: runs at the probe's 19x23, not at the parity's 17x15 (RGT's
    window reductions refuse sides below 16 in the same way)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pad(x, (15, 15, 15, 15), mode="reflect")
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest")[..., 30:-30, 30:-30]


@pytest.mark.parametrize(("module", "minimum", "says", "small"), [
    (NeedsASize(), 35, "runs at 35x37", (2, 3, 9, 11)),  # refuses the probe: grown
    (NeedsSixteen(), 19, "fails at 17x15", (1, 3, 12, 30)),  # runs at the probe, not below it
])
def test_a_minimum_size_is_found_and_small_inputs_padded(tmp_path: Path, module: torch.nn.Module, minimum: int,
                                                         says: str, small: tuple[int, ...]) -> None:
    path = export_dynamic(module, tmp_path / "m.onnx", 40)
    m = SRModel(path, device="cpu")
    assert m.conventions.min_size == minimum and says in m.sources["min_size"]
    assert m.check_parity().ok
    x = torch.rand(*small)  # below the minimum: padded, run, cropped back
    h, w = small[2:]
    with torch.no_grad():
        got, ref = m.torch()(x), m.ort()(x)
    padded = torch.nn.functional.pad(x, (0, max(0, minimum - w), 0, max(0, minimum - h)), mode="replicate")
    assert got.shape == (small[0], 3, 2 * h, 2 * w)
    assert torch.allclose(got, module(padded)[..., :2 * h, :2 * w], atol=1e-5) and torch.allclose(got, ref, atol=1e-5)
    big = torch.rand(1, 3, 40, 41)  # above it: untouched
    with torch.no_grad():
        assert torch.allclose(m.torch()(big), module(big), atol=1e-5)


class NeedsAMultiple(torch.nn.Module):
    """Space-to-depth by 8 and back at x2 (a window or pixel-unshuffled stage without padding):
    runs only on sides that are multiples of 8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pixel_unshuffle(x, 8)
        return torch.nn.functional.pixel_shuffle(y.repeat_interleave(4, dim=1), 16)


class RoundsUpOddSides(torch.nn.Module):
    """Pads an odd side to even and does not crop back (Real-CUGAN's runners crop outside the
    graph): x2 only on even sides."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


@pytest.mark.parametrize(("module", "multiple", "probe", "smallest"), [(NeedsAMultiple(), 8, "24x40", 16),
                                                                       (RoundsUpOddSides(), 2, "22x26", 16)])
def test_a_size_multiple_is_found_and_other_inputs_padded(tmp_path: Path, module: torch.nn.Module, multiple: int,
                                                          probe: str, smallest: int) -> None:
    """Found at the first grown size that runs, then the side shrunk in steps of the multiple
    (at most four, not below 15) as far as the model runs."""
    path = export_dynamic(module, tmp_path / "m.onnx", 32)
    m = SRModel(path, device="cpu")
    c = m.conventions
    assert (c.scale, c.multiple, c.min_size) == (2, multiple, smallest)
    assert f"runs at {probe}" in m.sources["min_size"] and f"a multiple of {multiple}" in m.sources["min_size"]
    assert m.check_parity().ok
    x = torch.rand(2, 3, 29, 41)  # padded to the rule, run, cropped back to 2x the input
    with torch.no_grad():
        got, ref = m.torch()(x), m.ort()(x)
    side = [max(c.min_size, -(-n // multiple) * multiple) for n in (29, 41)]
    padded = torch.nn.functional.pad(x, (0, side[1] - 41, 0, side[0] - 29), mode="replicate")
    assert got.shape == (2, 3, 58, 82)
    assert torch.allclose(got, module(padded)[..., :58, :82], atol=1e-5) and torch.allclose(got, ref, atol=1e-5)


class BakedSize(torch.nn.Module):
    """A Reshape to the export size (a window mask or token grid of 32x32, as TorchScript and
    torch.export bake them): declared dynamic, runs at 32x32 alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.reshape(1, 3, 32 * 32).reshape(1, 3, 32, 32) * 0.9 + 0.05
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)


def test_a_baked_export_size_is_found_and_tiled(tmp_path: Path) -> None:
    path = export_dynamic(BakedSize(), tmp_path / "m.onnx", 32)
    m = SRModel(path, device="cpu")
    c = m.conventions
    assert (c.scale, c.tile, c.batch) == (2, (32, 32), 1) and "runs at 32x32" in m.sources["tile"]
    assert m.check_parity().ok
    x = torch.rand(1, 3, 40, 50)  # tiled: every tile is the model's own size
    with torch.no_grad():
        got, ref = m.torch()(x), m.ort()(x)
    assert got.shape == (1, 3, 80, 100) and torch.allclose(got, ref, atol=1e-5)
    tile = x[..., :32, :32]
    with torch.no_grad():
        assert torch.allclose(m.torch()(tile), BakedSize()(tile), atol=1e-5)
