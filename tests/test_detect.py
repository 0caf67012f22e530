"""Convention detection: candidates scored on natural photos, margins, when a detected value
is adopted, and how `inspect` and the report show it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from typer.testing import CliRunner

from sreval import detect
from sreval.cli import app
from sreval.data import load_dataset
from sreval.io import write_image
from sreval.detect import candidate_values, propose
from sreval.commands import evaluate
from sreval.conventions import Conventions, parse_normalize
from sreval.errors import ConfigError
from sreval.model import SRModel
from sreval.onnxfile import input_affine
from sreval.runtime import ValueRange
from tests.test_conventions import Up, export
from tests.tiny import TinySR

runner = CliRunner()


class Range255(nn.Module):
    """Reads and writes 0..255 and turns to white when fed 0..1 (its pixels 'below 3')."""

    def forward(self, z: Tensor) -> Tensor:
        up = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
        return up + 20 * F.relu(3.0 - up)


class BgrOnly(nn.Module):
    """Reads and writes BGR: darkens where its 'blue' exceeds its 'red', rare in warm photos."""

    def forward(self, z: Tensor) -> Tensor:
        up = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
        return up - 4 * F.relu(up[:, 0:1] - up[:, 2:3] - 0.05)


class NoBias(nn.Module):
    """Positively homogeneous (no biases, ReLU): the same output in either range."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        nn.init.normal_(self.c.weight, std=0.01)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, z: Tensor) -> Tensor:
        return F.interpolate(z, scale_factor=2, mode="nearest") + self.shuffle(F.relu(self.c(z)))


@pytest.fixture(scope="module")
def r255(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(Range255(), tmp_path_factory.mktemp("d") / "r255.onnx")


def test_candidates() -> None:
    rgb = candidate_values(Conventions(scale=2), ("range", "color"))
    assert len(rgb) == 4 and {"range": 255.0, "color": "bgr"} in rgb
    y = candidate_values(Conventions(scale=2, color="y"), ("range", "color"))
    assert y == [{"range": 1.0}, {"range": 255.0}]  # y vs yfull: not detectable


def test_range_detected_with_a_large_margin(r255: Path) -> None:
    d = propose(SRModel(r255, device="cpu"))
    f = d.fields["range"]
    assert f.value == 255.0 and f.margin_db > 10 and f.confidence == "high"
    assert d.best is not None and d.best.values["range"] == 255.0
    assert d.fields["color"].confidence == "low"  # a colour-blind model: no evidence either way
    assert "range 255 (high" in d.summary()


def test_colour_order_detected(tmp_path: Path) -> None:
    d = propose(SRModel(export(BgrOnly(), tmp_path / "bgr.onnx"), device="cpu"))
    assert d.fields["color"].value == "bgr" and d.fields["color"].margin_db > 10


def test_not_adopted_unless_it_beats_bicubic(r255: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A confident winner that upscales worse than bicubic is no proof of a trained model
    (untrained or skip-dominated models can win in the wrong range): the default stays."""
    m = SRModel(r255, device="cpu")
    assert m.conventions.range == 1.0 and m.sources["range"] == "default"
    assert m.detection is not None and not m.detection.fields["range"].adopted
    monkeypatch.setattr(detect, "BEAT_BICUBIC_DB", -30.0)
    m = SRModel(r255, device="cpu")
    assert m.conventions.range == 255.0 and m.sources["range"] == "detected"
    assert m.describe()["detection"]["fields"]["range"]["adopted"] is True


def test_override_and_metadata_skip_detection(r255: Path, tmp_path: Path) -> None:
    m = SRModel(r255, device="cpu", range=255, color="rgb")
    assert m.detection is None and m.sources["range"] == "override"
    p = export(Up(2), tmp_path / "meta.onnx")
    proto = onnx.load(p)
    proto.metadata_props.add(key="sreval.scale", value="2")
    onnx.save(proto, p)
    assert SRModel(p, device="cpu").detection is None  # our own files say what they are
    assert SRModel(p, device="cpu", detect_conventions=True).detection is not None
    assert SRModel(r255, device="cpu", detect_conventions=False).detection is None


def test_homogeneous_model_is_inconclusive(tmp_path: Path) -> None:
    m = SRModel(export(NoBias(), tmp_path / "nb.onnx", channels=1), device="cpu")
    f = m.detection.fields["range"]
    assert f.margin_db < detect.ADOPT_MARGIN_DB and not f.adopted and m.sources["range"] == "default"


def test_random_tiny_models_keep_the_defaults(tmp_path: Path) -> None:
    for seed in range(3):
        m = SRModel(export(TinySR(scale=2, seed=seed), tmp_path / f"t{seed}.onnx"), device="cpu")
        assert (m.conventions.range, m.conventions.color) == (1.0, "rgb")


def test_inspect_shows_proposal_and_sources(r255: Path) -> None:
    r = runner.invoke(app, ["inspect", str(r255), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "range 255 (high" in r.output and "sources" in r.output and "range: default" in r.output


def test_report_records_sources_and_detection(r255: Path, tmp_path: Path) -> None:
    d = tmp_path / "set" / "HR"
    d.mkdir(parents=True)
    write_image(d / "a.png", load_dataset("default", 1, limit=1)[0].hr[:64, :64])
    rep = evaluate(r255, d.parent, out=tmp_path / "run", device="cpu", conventions={"color": "rgb"})
    model = rep["model"]
    assert model["convention_sources"]["color"] == "override"
    assert model["convention_sources"]["range"] == "default"
    assert model["detection"]["fields"]["range"]["value"] == 255.0
    text = (tmp_path / "run" / "report.json").read_text()
    assert json.loads(text)["model"]["detection"]["photos"] == ["chelsea", "coffee"]


def test_detection_as_dict_is_strict_json(r255: Path) -> None:
    d = propose(SRModel(r255, device="cpu", detect_conventions=False)).as_dict()
    json.dumps(d, allow_nan=False)
    assert all(math.isfinite(c["psnr"]) for c in d["candidates"])
    assert d["bicubic_psnr"] > 20


# ----------------------------------------------------------------------------- normalisations


@pytest.mark.parametrize("text, canonical", [("none", "none"), ("-1,1", "signed"), ("[-1, 1]", "signed"),
                                             ("ImageNet", "imagenet"), ("0.5/0.5", "0.5/0.5"),
                                             ("0.485,0.456,0.406/0.229,0.224,0.225", "0.485,0.456,0.406/0.229,0.224,0.225")])
def test_normalisations_are_read(text: str, canonical: str) -> None:
    assert parse_normalize(text) == canonical


@pytest.mark.parametrize("bad", ["0.5", "0.5/0", "1,2/1", "a/b", "nan/1", "0.5/-1"])
def test_bad_normalisations_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="normalize"):
        parse_normalize(bad)


def test_a_value_mapping_round_trips_in_the_models_channel_order() -> None:
    x = torch.rand(1, 3, 4, 4)
    for spec in ("signed", "imagenet", "0.1,0.2,0.3/0.5,0.6,0.7"):
        for color in ("rgb", "bgr"):
            v = ValueRange(255.0 if spec == "signed" else 1.0, spec, color)
            assert torch.allclose(v.from_model(v.to_model(x)), x, atol=1e-6)
    bgr = ValueRange(1.0, "imagenet", "bgr").to_model(torch.zeros(1, 3, 1, 1)).flatten()
    assert bgr.tolist() == pytest.approx([-0.406 / 0.225, -0.456 / 0.224, -0.485 / 0.229])
    with pytest.raises(Exception, match="one channel"):
        Conventions(scale=2, color="y", normalize="imagenet")
    assert Conventions(scale=2, color="y", normalize="signed").normalize == "signed"


def test_normalisation_candidates_are_on_the_unit_range_only() -> None:
    values = candidate_values(Conventions(scale=2), ("range", "normalize"))
    assert {"range": 255.0, "normalize": "none"} in values and {"range": 1.0, "normalize": "imagenet"} in values
    assert not any(v["range"] == 255.0 and v["normalize"] != "none" for v in values)
    assert {v["normalize"] for v in candidate_values(Conventions(scale=2, color="y"), ("normalize",))} == {"none", "signed"}


def test_range_and_normalize_options(r255: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["inspect", str(r255), "--device", "cpu", "--range", "-1,1", "--normalize", "imagenet"])
    assert r.exit_code == 1 and "contradict" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["inspect", str(r255), "--device", "cpu", "--range", "12"])
    assert r.exit_code == 1 and "range must be 1 or 255" in r.output, r.output
    m = SRModel(r255, device="cpu", range=1, normalize="signed", color="rgb")
    assert m.conventions.normalize == "signed" and m.sources["normalize"] == "override" and m.detection is None


# ----------------------------------------------------------------------------- the graph's own say


def _affine_graph(steps: list[tuple[str, list[float]]]) -> onnx.ModelProto:
    """x -> the constant steps -> Conv(1x1 identity): what a deployment wrapper writes first."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, name = [], [], "x"
    for i, (op, values) in enumerate(steps):
        c = numpy_helper.from_array(np.array(values, np.float32).reshape((1, -1, 1, 1) if len(values) > 1 else ()), f"c{i}")
        inits.append(c)
        nodes.append(helper.make_node(op, [name, c.name], [f"s{i}"]))
        name = f"s{i}"
    inits.append(numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w"))
    nodes.append(helper.make_node("Conv", [name, "w"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("steps,undone", [
    ([("Mul", [0.5]), ("Add", [0.5])], "signed"),
    ([("Mul", [0.229, 0.224, 0.225]), ("Add", [0.485, 0.456, 0.406]), ("Sub", [0.4, 0.4, 0.4])], "imagenet"),
    ([("Div", [255.0])], "range255"),
    ([("Mul", [1.0]), ("Sub", [0.45, 0.44, 0.40])], None),  # a model's own mean shift undoes nothing
])
def test_the_graph_names_the_mapping_it_undoes(steps: list, undone: str | None) -> None:
    """Each prefix of the input's constant affine chain is one map; a candidate is named when
    one of them exactly inverts what sreval feeds under it (the identity step says nothing)."""
    maps = input_affine(_affine_graph(steps), "x")
    assert len(maps) == len(steps)
    named = {name for name, conv in {"signed": Conventions(scale=1, normalize="signed"),
                                      "imagenet": Conventions(scale=1, normalize="imagenet"),
                                      "range255": Conventions(scale=1, range=255.0),
                                      "none": Conventions(scale=1)}.items() if detect._undoes(maps, conv)}
    assert named == ({undone} if undone else set())


def test_a_model_scoring_below_bicubic_is_a_warning() -> None:
    weak = detect.Detection((detect.Candidate({"range": 1.0}, 25.0),), {}, (), 32, 30.0)
    fine = detect.Detection((detect.Candidate({"range": 1.0}, 31.0),), {}, (), 32, 30.0)
    assert "5.0 dB below a bicubic upscale" in (detect.weakness(weak) or "") and detect.weakness(fine) is None
