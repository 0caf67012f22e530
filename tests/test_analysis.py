"""Transferability, robustness index, correlations and defenses on tiny models."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sreval.analysis import (
    IndexConfig, basic_psnr_from_report, common_scale, correlation, gradient_norms, matrix_csv,
    pearson, ranks, run_index, run_transfer, spearman, transfer_matrix, unique_names,
)
from sreval.config import BasicConfig, parse_defenses
from sreval.data import Sample, downscale
from sreval.defenses import (
    ResizeDefense, SelfEnsemble, defend, evaluate_defended, run_defended_attack,
)
from sreval.errors import ConfigError, DataError
from tests.tiny import TinySR

CPU = torch.device("cpu")


def frozen(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return frozen(TinySR(scale=2))


def sample(name: str, h: int, w: int, seed: int = 0) -> Sample:
    hr = np.round(np.random.default_rng(seed).random((2 * h, 2 * w, 3)) * 255).astype(np.float32) / 255
    return Sample(name, downscale(hr, 2), hr)


class Scaled(nn.Module):
    def __init__(self, inner: nn.Module, c: float):
        super().__init__()
        self.inner, self.c = inner, c

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) * self.c


class Nearest(nn.Module):
    """Pixel replication: exactly equivariant to flips and 90-degree rotations."""

    def forward(self, x: Tensor) -> Tensor:
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)


# ----------------------------------------------------------------------------- correlations


def test_pearson_and_spearman_by_hand() -> None:
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert pearson(a, [2 * v + 1 for v in a]) == pytest.approx(1.0)
    assert pearson(a, [-v for v in a]) == pytest.approx(-1.0)
    b = [1.0, 4.0, 9.0, 16.0, 100.0]
    assert pearson(a, b) == pytest.approx(float(np.corrcoef(a, b)[0, 1]))
    assert spearman(a, b) == pytest.approx(1.0)  # monotone, not linear
    assert list(ranks(np.array([10.0, 20.0, 20.0, 5.0]))) == [2.0, 3.5, 3.5, 1.0]
    # ties: rho = Pearson of [1, 2.5, 2.5, 4] and [1, 2, 3, 4]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(float(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1]))
    assert pearson([1, 2], [3, 4]) is None and pearson([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ConfigError):
        pearson([1, 2, 3], [1, 2])


def test_correlation_skips_infinite_psnr() -> None:
    rows = [{"image": n, "robustness_index": v} for n, v in zip("abcd", (1.0, 2.0, 3.0, 4.0))]
    c = correlation(rows, {"a": 40.0, "b": 30.0, "c": 20.0, "d": math.inf})
    assert c["n"] == 3 and c["pearson"] == pytest.approx(-1.0) and c["spearman"] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- robustness index


def test_index_is_batch_independent_and_uses_the_l2_norm(model: nn.Module) -> None:
    x0 = torch.rand(1, 3, 9, 10)
    cfg = IndexConfig(alpha=2 / 255, samples=6, batch=None)
    b = gradient_norms(model, x0, cfg)
    assert b.shape == (6,) and (b > 0).all()
    b_chunked = gradient_norms(model, x0, IndexConfig(alpha=2 / 255, samples=6, batch=4))
    assert torch.allclose(b, b_chunked, rtol=1e-5)
    # eq. 1 is a norm: scaling f by c scales its input gradient by c (an MSE would give c^2)
    b3 = gradient_norms(frozen(Scaled(model, 3.0)), x0, cfg)
    assert torch.allclose(b3, 3 * b, rtol=1e-4)


def test_run_index_rows(model: nn.Module) -> None:
    samples = [sample("a", 8, 8), sample("b", 6, 10, seed=1)]
    rows = run_index(model, samples, IndexConfig(samples=4, batch=3), device=CPU)
    assert [r["image"] for r in rows] == ["a", "b"]
    for r in rows:
        assert r["attack"] == "index" and r["robustness_index"] >= r["b_mean"] > 0


@pytest.mark.parametrize("kw", [dict(samples=0), dict(samples=-3), dict(batch=0), dict(alpha=0.0), dict(alpha=2.0)])
def test_index_config_rejects(kw: dict) -> None:
    with pytest.raises(ConfigError):
        IndexConfig(**kw)


def test_psnr_from_previous_report() -> None:
    rep = {"model": {"name": "m", "sha256": "a" * 64},
           "results": [{"image": "x", "attack": "basic", "alpha": 1 / 255, "psnr_sr": 30.0},
                       {"image": "y", "attack": "basic", "alpha": 1 / 255, "psnr_sr": None},
                       {"image": "x", "attack": "basic", "alpha": 8 / 255, "psnr_sr": 10.0}]}
    assert basic_psnr_from_report(rep, 1 / 255, ["x", "y"], "a" * 64) == {"x": 30.0, "y": math.inf}
    with pytest.raises(DataError, match="no basic-attack row at alpha 2/255"):
        basic_psnr_from_report(rep, 2 / 255, ["x"])
    with pytest.raises(ConfigError, match="another model"):
        basic_psnr_from_report(rep, 1 / 255, ["x"], "b" * 64)


# ----------------------------------------------------------------------------- transfer


def test_transfer_matrix_has_white_box_diagonal(model: nn.Module) -> None:
    other = frozen(TinySR(scale=2, seed=3))
    samples = [sample("a", 10, 10), sample("b", 8, 12, seed=2)]
    res = run_transfer({"m1": model, "m2": other}, samples, 2, BasicConfig(alphas=(8 / 255,), steps=4), device=CPU)
    assert len(res.rows) == 2 * 2 * 2  # images x sources x targets
    m = res.matrix[8 / 255]
    assert len(m) == 2 and all(len(r) == 2 for r in m)
    # each model is hurt most by its own (white-box) examples
    assert m[0][0] < m[1][0] and m[1][1] < m[0][1]
    assert {r["white_box"] for r in res.rows if r["source"] == r["target"]} == {True}
    assert m == transfer_matrix(res.rows, ["m1", "m2"], 8 / 255)
    lines = list(csv.reader(io.StringIO(matrix_csv(["m1", "m2"], res.matrix)), quoting=csv.QUOTE_NONNUMERIC))
    assert lines[0] == ["alpha", "source", "m1", "m2"] and lines[1][1] == "m1" and len(lines) == 3


def test_transfer_scale_and_names() -> None:
    assert common_scale({"a": 4, "b": 4}) == 4
    with pytest.raises(ConfigError, match="one scale.*a x2, b x4"):
        common_scale({"a": 2, "b": 4})
    assert unique_names(["carn", "tiny", "carn", "carn"]) == ["carn", "tiny", "carn#2", "carn#3"]


# ----------------------------------------------------------------------------- defenses


def test_self_ensemble_of_an_equivariant_model_is_the_model() -> None:
    x = torch.rand(2, 3, 5, 7)  # non-square: the rotated passes see 7x5
    assert torch.allclose(SelfEnsemble(Nearest())(x), Nearest()(x), atol=1e-7)


def test_self_ensemble_averages_eight_passes(model: nn.Module) -> None:
    calls: list[tuple[int, int]] = []

    class Spy(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(tuple(x.shape[-2:]))
            return model(x)

    y = SelfEnsemble(Spy())(torch.rand(1, 3, 6, 8))
    assert y.shape == (1, 3, 12, 16)
    assert sorted(calls) == sorted([(6, 8)] * 4 + [(8, 6)] * 4)


def test_resize_defense_shape_gradient_and_constants(model: nn.Module) -> None:
    d = ResizeDefense(Nearest())
    const = torch.full((1, 3, 7, 9), 0.3)
    assert torch.allclose(d(const), Nearest()(const), atol=1e-6)  # bicubic keeps a flat image
    x = torch.rand(1, 3, 7, 9)
    assert not torch.allclose(d(x), Nearest()(x), atol=1e-3)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(defend(model, "resize")(xg).square().sum(), xg)
    assert g.abs().sum() > 0  # differentiable: an adaptive attack can go through it


def test_parse_defenses() -> None:
    assert parse_defenses("resize, self-ensemble") == ("resize", "self-ensemble")
    assert parse_defenses(["resize", "resize"]) == ("resize",)
    with pytest.raises(ConfigError, match="unknown defense 'jpeg'"):
        parse_defenses(["jpeg"])
    with pytest.raises(ConfigError):
        parse_defenses("")


def test_defended_attack_rows(model: nn.Module) -> None:
    rows = run_defended_attack(model, [sample("a", 9, 9)], 2, BasicConfig(alphas=(8 / 255,), steps=3),
                               ["resize", "self-ensemble"], device=CPU)
    assert [r["attack"] for r in rows] == [
        "basic", "basic+resize", "basic+resize-adaptive", "basic+self-ensemble", "basic+self-ensemble-adaptive"]
    bare = rows[0]
    assert bare["psnr_sr"] == pytest.approx(bare["psnr_sr_vs_bare"])
    assert rows[1]["psnr_lr"] == bare["psnr_lr"]  # the very same adversarial LR, seen through D
    assert all(math.isfinite(r["psnr_sr"]) and math.isfinite(r["psnr_hr"]) for r in rows)


def test_evaluate_defended_rows(model: nn.Module) -> None:
    rows = evaluate_defended(model, [sample("a", 8, 8)], 2, ["resize"], device=CPU)
    assert [r["attack"] for r in rows] == ["none", "none+resize"]
    with pytest.raises(DataError, match="no HR"):
        evaluate_defended(model, [Sample("lr", np.zeros((8, 8, 3), np.float32), None)], 2, ["resize"], device=CPU)
