"""The model zoo: manifest, Table 1, offline builds of the real-weight entries, verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sreval import manifest, zoo
from sreval.cli import app

runner = CliRunner()
PAPER_TABLE1 = {  # Choi et al. 2019, Table 1: params (millions, one decimal), conv layers, GAN
    "edsr": ("43.1M", 69, False), "edsr-baseline": ("1.5M", 37, False), "rcan": ("15.6M", 815, False),
    "4pp-eusr": ("6.3M", 95, True), "esrgan": ("16.7M", 351, True), "rrdb": ("16.7M", 351, False),
    "carn": ("1.1M", 34, False), "carn-m": ("0.3M", 43, False),
}
# Real weights a fresh machine (with the shared assets) can build: CI builds and verifies these.
REAL = ["carn-m", "imdn", "rfdn", "pan", "realesrgan-x4plus", "realesrgan-x4plus-anime",
        "realesr-animevideov3-x4", "span-x2-ch48", "span-x2-ch52", "span-x4-ch48", "span-x4-ch52", "realcugan-x2",
        "realcugan-x3", "realcugan-x4", "realcugan-pro-x3", "waifu2x-upconv7-photo-x2", "waifu2x-cunet-x2"]


@pytest.fixture(scope="module")
def zoo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private folder for built models, so tests never touch the user's zoo cache."""
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture()
def in_zoo(zoo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SREVAL_ZOO", str(zoo_home))
    return zoo_home


def test_manifest_entries_are_buildable_descriptions() -> None:
    from sreval import exporters
    from sreval.exporters.wheels import NCNN_MODELS

    entries = zoo.manifest()
    assert set(PAPER_TABLE1) | {"bicubic"} <= {n for n, e in entries.items() if e.paper}
    for e in entries.values():
        assert e.arch in exporters.ARCHS, e.name
        assert e.scale in exporters.ARCHS[e.arch].scales or e.weights.kind == "ncnn", e.name
        if e.weights.kind == "ncnn":
            assert e.weights.ncnn_model in NCNN_MODELS and e.weights.describe() == e.weights.source
            assert NCNN_MODELS[e.weights.ncnn_model].scale == e.scale, e.name
            assert e.verified["max_abs_diff"] < 1e-4, e.name
        if e.weights.kind != "none":
            assert e.objective in ("PSNR", "GAN"), e.name
            assert (e.objective == "GAN") == exporters.ARCHS[e.arch].gan_trained, e.name
        if e.weights.kind == "asset":
            assert e.weights.sha256 and len(e.weights.sha256) == 64
    for name in REAL:
        assert entries[name].expected("Set5") is not None, f"{name}: no measured Set5 PSNR"


@pytest.mark.slow
def test_table1_from_exported_graphs(in_zoo: Path) -> None:
    r = runner.invoke(app, ["zoo", "table", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    for name, (params, convs, gan) in PAPER_TABLE1.items():
        row = rows[name]
        assert (row["params_m"], row["conv_layers"], row["gan_trained"]) == (params, convs, gan), row
        assert isinstance(row["params"], int)
    assert rows["4pp-eusr"]["params"] == 3_699_971 and rows["4pp-eusr"]["params_checkpoint"] == 6_295_689
    assert rows["esrgan"]["params"] == rows["rrdb"]["params"] == 16_697_987


def test_unknown_name_and_unbuilt_model(in_zoo: Path) -> None:
    r = runner.invoke(app, ["inspect", "no-such-model"])
    assert r.exit_code == 1 and "no zoo model of that name" in r.output
    r = runner.invoke(app, ["inspect", "rcan"])
    assert r.exit_code == 1 and "sreval zoo build rcan" in r.output


def test_weights_that_are_not_here_are_refused_clearly(in_zoo: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["zoo", "build", "rcan"])
    assert r.exit_code == 1 and "--weights" in r.output
    wrong = tmp_path / "wrong.pth"
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    r = runner.invoke(app, ["zoo", "build", "carn-m", "--weights", str(wrong)])
    assert r.exit_code == 1 and "not the official carn-m checkpoint" in r.output and "--other-weights" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["zoo", "build", "carn-m", "--weights", str(wrong), "--other-weights"])
    assert r.exit_code == 1 and "not a carn_m checkpoint" in r.output and "missing keys" in r.output
    assert "[" in r.output  # the key lists in brackets are printed as they are, not eaten as markup
    assert len(r.output.strip().splitlines()) == 1


def test_sha256_mismatch_is_refused(in_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = zoo.entry("carn-m")
    bad = manifest.Entry(**{**e.__dict__, "weights": manifest.Weights(kind="url", url="https://example.invalid/carn_m.pth",
                                                           sha256="0" * 64)})
    monkeypatch.setenv("SREVAL_CACHE", str(tmp_path))

    def fake_download(url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"not the real file")

    with pytest.raises(zoo.ModelError, match="SHA-256 mismatch"):
        zoo.find_weights(bad, download=fake_download)


@pytest.mark.slow
def test_build_and_verify_real_weights_on_set5(in_zoo: Path, assets: Path, ncnn_wheels: None) -> None:
    """What CI proves in every run: the offline real-weight entries build, pass parity, and
    reproduce their recorded clean Set5 PSNR within 0.05 dB."""
    r = runner.invoke(app, ["zoo", "build", *REAL])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "carn-m" in r.output
    r = runner.invoke(app, ["zoo", "verify", *REAL, "--data", "Set5", "--tol", "0.05"])
    assert r.exit_code == 0, r.output
    verdicts = zoo.verify(["carn-m"], "Set5")
    assert verdicts[0].status == "ok" and abs(verdicts[0].psnr - 31.88) < 0.05
    # a zoo name works wherever a MODEL goes
    r = runner.invoke(app, ["inspect", "carn-m", "--device", "cpu"])
    assert r.exit_code == 0 and "ok" in r.output


def test_verify_flags_a_regression(in_zoo: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = json.loads(manifest.manifest_path().read_text())
    for m in raw["models"]:
        if m["name"] == "bicubic":
            m["psnr"]["measured"]["Set5"] = 30.0  # a deliberately wrong expectation
    (in_zoo / "private.json").write_text(json.dumps(raw))
    monkeypatch.setenv("SREVAL_MANIFEST", str(in_zoo / "private.json"))  # a private manifest
    manifest._manifest.cache_clear()
    try:
        assert runner.invoke(app, ["zoo", "build", "bicubic"]).exit_code == 0
        r = runner.invoke(app, ["zoo", "verify", "bicubic", "--data", "Set5"])
        assert r.exit_code == 1 and "regression" in r.output and "bicubic" in r.output
    finally:
        manifest._manifest.cache_clear()


def test_unbuilt_zoo_models_are_built_on_first_use(tmp_path: Path, assets: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh zoo (nothing built): a sweep over a model with asset weights and one with none
    builds both first, saying so, instead of failing with "not built yet"."""
    in_zoo = tmp_path / "zoo"
    monkeypatch.setenv("SREVAL_ZOO", str(in_zoo))
    r = runner.invoke(app, ["sweep", "--models", "carn-m,bicubic", "--data", "Set5", "--limit", "1", "--crop", "12",
                            "--alpha", "8/255", "--steps", "2", "--device", "cpu", "--out", str(in_zoo / "run")])
    assert r.exit_code == 0, r.output
    assert "building zoo model carn-m on first use" in r.output and "building zoo model bicubic" in r.output
    assert (in_zoo / "carn-m.onnx").is_file() and (in_zoo / "bicubic.onnx").is_file()
