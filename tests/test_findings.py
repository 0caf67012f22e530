"""The findings section: each claim's verdict from the numbers of a run (synthetic runs with
known answers), and every claim present in a real report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sreval.findings import FAILS, HOLDS, PARTLY, UNTESTED, findings
from sreval.runview import CellView, RunView

A = 8 / 255


def model(name: str, params: int, convs: int, gan: bool | None, scale: int = 4) -> dict[str, Any]:
    return {"name": name, "params": params, "conv_layers": convs, "gan_trained": gan, "scale": scale}


def basic(name: str, sr: float, lr: float = 40.0, dataset: str = "Set5") -> CellView:
    rows = [{"attack": "basic", "alpha": a, "psnr_sr": sr + (5 if a < A else 0), "psnr_lr": lr, "image": "x"}
            for a in (2 / 255, A)]
    return CellView("basic", name, dataset, rows, {}, Path("."))


def run(models: list[dict[str, Any]], cells: list[CellView]) -> RunView:
    return RunView(Path("."), {}, cells, models, {}, [])



MODELS = [model("bicubic", 0, 0, False), model("small", 10_000, 5, False), model("mid", 100_000, 20, False),
          model("gan", 1_000_000, 60, True)]


KEYS = {"GAN-trained": "GAN", "Bicubic": "Bicubic", "SR": "SR output", "Vulnerability": "model size",
        "A": "partial", "Adversarial": "transfer", "index": "robustness index", "defenses": "defenses"}


def by_key(r: RunView) -> dict[str, Any]:
    """The findings keyed by a word of their claim."""
    items = findings(r)
    return {key: next(f for f in items if needle in f.claim) for key, needle in KEYS.items()}


def test_the_papers_picture_holds() -> None:
    cells = [basic("bicubic", 36.0, 36.5), basic("small", 30.0), basic("mid", 25.0), basic("gan", 20.0)]
    by_start = by_key(run(MODELS, cells))
    assert by_start["GAN-trained"].verdict == HOLDS and "least robust gan (20.00 dB)" in by_start["GAN-trained"].evidence
    assert by_start["Bicubic"].verdict == HOLDS
    assert by_start["SR"].verdict == HOLDS  # SR damage (20-30 dB) far below the LR's 40 dB
    assert by_start["Vulnerability"].verdict == HOLDS and "-1.00" in by_start["Vulnerability"].evidence
    for claim in ("A", "Adversarial"):
        assert by_start[claim].verdict == UNTESTED  # no partial / transfer attack in this run


def test_the_opposite_picture_does_not_hold() -> None:
    cells = [basic("bicubic", 20.0, 40.0), basic("small", 21.0), basic("mid", 30.0), basic("gan", 39.0, 39.5)]
    got = {k: f.verdict for k, f in by_key(run(MODELS, cells)).items()}
    assert got["GAN-trained"] == FAILS and got["Bicubic"] == FAILS and got["Vulnerability"] == FAILS
    assert got["SR"] == PARTLY  # small and mid lose far more in SR than in LR, gan does not


def test_models_of_another_scale_are_left_out_and_missing_pieces_untested() -> None:
    models = [*MODELS, model("x2", 50_000, 10, True, scale=2)]
    cells = [basic("small", 30.0), basic("mid", 25.0), basic("x2", 10.0)]
    got = by_key(run(models, cells))
    assert got["Bicubic"].verdict == UNTESTED and "needs the basic attack on bicubic" in got["Bicubic"].evidence
    assert got["GAN-trained"].verdict == UNTESTED  # the only GAN-trained model is x2, the run is mostly x4
    assert "x2" not in got["SR"].evidence


def test_partial_transfer_index_defense() -> None:
    partial = CellView("partial", "mid", "Set5", [{"attack": "partial", "alpha": A, "psnr_sr": 35.0}],
                       {"permeation": [{"alpha": A, "distance_lr": [1, 2, 3], "mse_y": [4.0, 1.0, 0.2]}]}, Path("."))
    transfer = CellView("transfer", "small,mid", "Set5", [],
                        {"transfer": {"models": ["small", "mid"],
                                      "matrix": [{"alpha": A, "psnr_sr": [[25.0, 31.0], [30.0, 22.0]]}]}}, Path("."))
    index = CellView("index", "mid", "Set5", [], {"robustness_index": {"pearson": -0.8, "spearman": -0.7, "n": 5}},
                     Path("."))
    defense = CellView("defense", "mid", "Set5",
                       [{"attack": "basic", "alpha": A, "psnr_sr": 25.0}, {"attack": "basic+resize", "alpha": A,
                        "psnr_sr": 29.0}, {"attack": "basic+resize-adaptive", "alpha": A, "psnr_sr": 20.0}],
                       {}, Path("."))
    cells = [basic("small", 30.0), basic("mid", 25.0), partial, transfer, index, defense]
    got = by_key(run(MODELS, cells))
    assert got["A"].verdict == HOLDS and "ring 3" in got["A"].evidence
    assert got["Adversarial"].verdict == HOLDS and "transferred 30.5 dB" in got["Adversarial"].evidence
    assert got["index"].verdict == HOLDS
    assert got["defenses"].verdict == HOLDS and "adaptive" not in got["defenses"].evidence


@pytest.mark.parametrize("pearson, verdict", [(-0.5, HOLDS), (0.4, FAILS)])
def test_index_sign(pearson: float, verdict: str) -> None:
    index = CellView("index", "mid", "Set5", [], {"robustness_index": {"pearson": pearson, "spearman": 0.0}}, Path("."))
    assert by_key(run(MODELS, [index]))["index"].verdict == verdict


def test_gan_claim_partly() -> None:
    """GAN-trained worse on average, but the least robust model is a PSNR-oriented one."""
    cells = [basic("small", 19.0), basic("mid", 35.0), basic("gan", 20.0)]
    got = by_key(run(MODELS, cells))["GAN-trained"]
    assert got.verdict == PARTLY and "least robust small" in got.evidence


def test_size_claim_weak_correlation_is_partly() -> None:
    models = [model("a", 1_000, 3, False), model("b", 2_000, 30, False), model("c", 3_000, 10, False),
              model("d", 4_000, 20, False)]
    cells = [basic("a", 25.0), basic("b", 20.0), basic("c", 26.0), basic("d", 22.0)]
    got = by_key(run(models, cells))["Vulnerability"]
    assert got.verdict == PARTLY and "parameters +0.00, with conv layers -0.80" in got.evidence, got.evidence
