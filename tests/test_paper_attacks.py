"""Universal, partial and targeted attacks: invariants on tiny models, then one real-weights
run (CARN-M, the paper's smallest model) on small Set5 crops and the foreman frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sreval.registry import ATTACKS
from sreval.config import BasicConfig
from sreval.attacks.common import mse_to
from sreval.attacks.partial import (
    PartialIFGSM, central_mask, half_distance, hr_mask, mask_bounds, mean_profile, permeation,
    ring_distance, run_partial,
)
from sreval.attacks.targeted import TargetedConfig, TargetedIFGSM, TargetedPair, load_pair, run_targeted
from sreval.attacks.universal import (
    Universal, UniversalConfig, apply_perturbation, centre_crop_pair, fitting_crop, quantize_perturbation,
    run_universal, split_holdout,
)
from sreval.data import Sample, downscale
from sreval.errors import ConfigError, DataError
from sreval.io import write_image
from tests.tiny import TinySR

CPU = torch.device("cpu")


def sample(name: str, h: int, w: int, scale: int = 2, seed: int = 0) -> Sample:
    """An 8-bit HR image and its MATLAB-bicubic LR (h x w)."""
    hr = np.round(np.random.default_rng(seed).random((h * scale, w * scale, 3)) * 255).astype(np.float32) / 255
    return Sample(name, downscale(hr, scale), hr)


def test_registry_names_every_attack() -> None:
    assert {"basic", "universal", "partial", "targeted"} <= set(ATTACKS)


# ----------------------------------------------------------------------------- universal


@pytest.mark.parametrize("reference", ["hr", "clean-sr"])
def test_universal_is_one_bounded_perturbation(model: torch.nn.Module, reference: str) -> None:
    x = torch.rand(3, 3, 10, 10)
    hr = torch.rand(3, 3, 20, 20)
    eps = 6 / 255
    attack = Universal(model, eps, steps=4, reference=reference)
    delta = attack.perturbation(x, hr)
    assert delta.shape == (1, 3, 10, 10)
    assert delta.abs().max() <= eps + 1e-7 and delta.abs().max() > eps / 2
    xa = attack(x, hr)
    assert torch.equal(xa, (x + delta).clamp(0, 1))  # eq. 5 with the same delta for all


@pytest.mark.parametrize("loss,gain", [("paper", 1.15), ("official", 1.3)])  # measured 1.22, 1.49
def test_universal_raises_its_objective_over_random_noise(model: torch.nn.Module, loss: str, gain: float) -> None:
    """F(Delta) of eq. 6 (mean of norms) or of the official code (mean of MSEs): the fitted
    Delta beats a random corner of the same budget on the objective it maximised."""
    from sreval.attacks.universal import image_losses

    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    eps = 8 / 255
    with torch.no_grad():
        ref = model(x)
        delta = Universal(model, eps, steps=6, quantize=False, loss=loss).perturbation(x)
        noise = (torch.randint(0, 2, delta.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * eps
        f = image_losses(loss)
        attacked = f(model((x + delta).clamp(0, 1)), ref).mean()
        random = f(model((x + noise).clamp(0, 1)), ref).mean()
    assert attacked > gain * random


def test_universal_objective_does_not_depend_on_chunking(model: torch.nn.Module) -> None:
    x = torch.rand(5, 3, 8, 9)
    delta = (torch.rand(1, 3, 8, 9) * 2 - 1) * 0.02
    with torch.no_grad():
        ref = model(x)
    v1, whole = Universal(model, 8 / 255)._objective(x, ref, None)[0](delta)
    v2, chunked = Universal(model, 8 / 255, batch=2)._objective(x, ref, None)[0](delta)
    assert whole.shape == (1, 3, 8, 9)
    assert torch.allclose(whole, chunked, atol=1e-6, rtol=1e-5) and torch.allclose(v1, v2, rtol=1e-5)


@pytest.mark.parametrize("loss", ["paper", "official"])
def test_universal_objective_is_eq6(model: torch.nn.Module, loss: str) -> None:
    """F(Delta) = 1/K sum_k L(X^k): L = ||f(X^k) - R^k||_2 (eq. 1, paper) or the MSE (official
    code), checked against a direct autograd computation written from the equations."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 7, 8, generator=g)
    hr = torch.rand(4, 3, 14, 16, generator=g)
    delta = (torch.rand(1, 3, 7, 8, generator=g) * 2 - 1) * 0.03
    value, grad = Universal(model, 8 / 255, loss=loss)._objective(x, hr, None)[0](delta)
    d = delta.clone().requires_grad_(True)
    diffs = [(model((x[k:k + 1] + d).clamp(0, 1)) - hr[k:k + 1]) for k in range(4)]
    per = [e.norm() if loss == "paper" else e.square().mean() for e in diffs]
    f = sum(per) / 4
    (ref_grad,) = torch.autograd.grad(f, d)
    assert torch.allclose(value, f.detach().reshape(1), rtol=1e-5)
    assert torch.allclose(grad, ref_grad, rtol=1e-4, atol=1e-9)


def test_universal_losses_give_different_directions(model: torch.nn.Module) -> None:
    """Eq. 6 weights each image's gradient by 1 / its norm: summed, the signs differ from
    the official mean of MSEs on some pixels (why the two losses reach different PSNRs)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 8, 8, generator=g)
    hr = torch.rand(3, 3, 16, 16, generator=g) * torch.tensor([0.2, 1.0, 3.0]).reshape(3, 1, 1, 1)
    delta = torch.zeros(1, 3, 8, 8)
    paper = Universal(model, 8 / 255, loss="paper")._objective(x, hr, None)[0](delta)[1]
    official = Universal(model, 8 / 255, loss="official")._objective(x, hr, None)[0](delta)[1]
    assert (paper.sign() != official.sign()).any()


def test_universal_records_its_loss(model: torch.nn.Module) -> None:
    samples = [sample(f"i{k}", 9, 9, seed=k) for k in range(2)]
    for loss in ("paper", "official"):
        res = run_universal(model, samples, 2, UniversalConfig(alphas=(8 / 255,), steps=2, loss=loss), device=CPU)
        assert {r["loss"] for r in res.rows} == {loss}
        assert len(res.rows[0]["loss_curve"]) == 3
    with pytest.raises(ConfigError, match="universal loss"):
        UniversalConfig(alphas=(8 / 255,), loss="mse")


def test_quantized_perturbation_stays_on_grid_and_in_budget() -> None:
    d = (torch.rand(1, 3, 6, 6) * 2 - 1) * 0.05
    for eps in (0.05, 8 / 255):
        q = quantize_perturbation(d.clamp(-eps, eps), eps)
        assert q.abs().max() <= eps + 1e-7
        assert torch.allclose(q * 255, torch.round(q * 255), atol=1e-4)


def test_crop_pairs_stay_aligned_with_odd_margins() -> None:
    """HR crop offsets are scale x LR offsets, even when (H - crop) is odd."""
    hr = np.zeros((4 * 9, 4 * 8, 3), np.float32)
    hr[..., 0] = np.arange(36)[:, None] / 255  # row index in the red channel
    hr[..., 1] = np.arange(32)[None, :] / 255  # column index in green
    s = Sample("a", np.zeros((9, 8, 3), np.float32), hr)
    c = centre_crop_pair(s, 6, 4)
    assert c.lr.shape == (6, 6, 3) and c.hr.shape == (24, 24, 3)
    assert round(c.hr[0, 0, 0] * 255) == 4 * ((9 - 6) // 2) and round(c.hr[0, 0, 1] * 255) == 4 * ((8 - 6) // 2)


def test_fitting_crop_and_holdout_split() -> None:
    samples = [sample("a", 12, 16), sample("b", 14, 10)]
    assert fitting_crop(samples, None) == 10
    assert fitting_crop(samples, 8) == 8
    with pytest.raises(ConfigError, match="larger than image b"):
        fitting_crop(samples, 11)
    fit, held = split_holdout(10, 0.3, seed=1)
    assert len(held) == 3 and sorted(fit + held) == list(range(10))
    assert split_holdout(10, 0.3, seed=1) == (fit, held)
    with pytest.raises(ConfigError, match="no image to hold out"):
        split_holdout(2, 0.1, 0)
    with pytest.raises(ConfigError, match="no image to fit on"):
        split_holdout(2, 0.9, 0)
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ConfigError, match="holdout"):
            UniversalConfig(alphas=(8 / 255,), holdout=bad)


def test_run_universal_rows_groups_and_one_delta(model: torch.nn.Module) -> None:
    samples = [sample(f"i{k}", 10 + k, 12, seed=k) for k in range(4)]
    cfg = UniversalConfig(alphas=(4 / 255, 8 / 255), steps=3, holdout=0.25, crop=9)
    res = run_universal(model, samples, 2, cfg, device=CPU)
    assert res.crop == 9 and len(res.holdout) == 1 and len(res.fit) == 3
    assert len(res.rows) == 8 and {r["group"] for r in res.rows} == {"fit", "holdout"}
    assert all(r["attack"] == "universal" and math.isfinite(r["psnr_sr"]) for r in res.rows)
    assert set(res.perturbations) == set(cfg.alphas)
    for a, d in res.perturbations.items():
        assert d.shape == (9, 9, 3) and np.abs(d).max() <= a + 1e-6
    mean_sr = {a: np.mean([r["psnr_sr"] for r in res.rows if r["alpha"] == a]) for a in cfg.alphas}
    assert mean_sr[8 / 255] < mean_sr[4 / 255]


# ----------------------------------------------------------------------------- partial


def test_mask_is_the_central_half() -> None:
    assert mask_bounds(10, 12) == (3, 8, 3, 9)  # h/4 <= y < 3h/4: 2.5 -> 3 .. 7.5 -> 7
    m = central_mask(8, 8)
    assert m.sum() == 16 and m[0, 0, 2:6, 2:6].min() == 1
    mh = hr_mask(m, 3)
    assert mh.shape == (1, 1, 24, 24) and mh.sum() == 16 * 9


@pytest.mark.parametrize("reference", ["hr", "clean-sr"])
def test_partial_attack_never_touches_outside_the_mask(model: torch.nn.Module, reference: str) -> None:
    x = torch.rand(1, 3, 12, 10)
    hr = torch.rand(1, 3, 24, 20)
    xa = PartialIFGSM(model, eps=[4 / 255, 8 / 255], scale=2, steps=4, reference=reference)(x, hr)
    m = central_mask(12, 10)
    assert torch.equal(xa * (1 - m), x.repeat(2, 1, 1, 1) * (1 - m))
    assert (xa - x).abs().max() <= 8 / 255 + 1e-7 and (xa[1:] - x).abs().max() > 4 / 255


def test_ring_distances_and_permeation_profile() -> None:
    rings = ring_distance(8, 8, 2)  # LR mask rows/cols 2..5 -> HR 4..11
    assert rings.shape == (16, 16)
    assert (rings[4:12, 4:12] == 0).all()
    assert rings[3, 8] == 1 and rings[2, 8] == 1 and rings[1, 8] == 2 and rings[0, 0] == 2
    sr0 = np.zeros((16, 16, 3), np.float32)
    sr = sr0.copy()
    sr[2:14, 2:14] = 10 / 255  # damage reaching one LR pixel out of the mask
    prof = permeation(sr0, sr, rings, shave=0)
    assert prof["distance_lr"] == [1, 2]
    assert prof["mse_y"][0] > 0 and prof["mse_y"][1] == 0.0
    assert prof["pixels"] == [16 * 16 - 8 * 8 - (16 * 16 - 12 * 12), 16 * 16 - 12 * 12]
    assert half_distance(prof) == 2
    assert mean_profile([prof, {"distance_lr": [1], "mse_y": [0.0], "pixels": [1]}])["images"] == [2, 1]


def test_run_partial_measures_outside_and_decay(model: torch.nn.Module) -> None:
    samples = [sample("a", 16, 16), sample("b", 14, 18, seed=1)]
    res = run_partial(model, samples, 2, BasicConfig(alphas=(8 / 255,), steps=3), device=CPU)
    assert len(res.rows) == 2 and res.reference == "hr"
    for r in res.rows:
        assert r["attack"] == "partial"
        assert r["psnr_sr"] > r["psnr_sr_inside"]  # less damage where nothing was perturbed
        assert r["psnr_lr"] > 40  # a quarter of the pixels at most 8 levels
    prof = res.permeation[8 / 255]
    assert prof["mse_y"][0] > prof["mse_y"][-1]


# ----------------------------------------------------------------------------- targeted


def test_targeted_moves_the_output_towards_the_target(model: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 10, 10)
    target = torch.rand(1, 3, 20, 20)
    xa = TargetedIFGSM(model, eps=[4 / 255, 16 / 255], steps=5)(x, target)
    assert (xa[0] - x).abs().max() <= 4 / 255 + 1e-7
    with torch.no_grad():
        d0, d4, d16 = ((model(v) - target).square().mean().item() for v in (x, xa[:1], xa[1:]))
    assert d16 < d4 < d0


def test_load_pair_checks_files_and_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "s.png", rng.random((18, 22, 3)).astype(np.float32))
    write_image(tmp_path / "t.png", rng.random((19, 23, 3)).astype(np.float32))  # same after crop to x2
    write_image(tmp_path / "u.png", rng.random((24, 22, 3)).astype(np.float32))
    pair = load_pair(tmp_path / "s.png", tmp_path / "t.png", 2)
    assert pair.source.hr.shape == pair.target.hr.shape == (18, 22, 3)
    assert pair.source.lr.shape == (9, 11, 3)
    with pytest.raises(DataError, match="target image not found"):
        load_pair(tmp_path / "s.png", tmp_path / "none.png", 2)
    with pytest.raises(DataError, match="target HR is 22x24 but source HR is 22x18"):
        load_pair(tmp_path / "s.png", tmp_path / "u.png", 2)


def test_run_targeted_reports_all_four_psnrs(model: torch.nn.Module) -> None:
    src, tgt = sample("src", 8, 10), sample("tgt", 8, 10, seed=5)
    res = run_targeted(model, TargetedPair(src, tgt), 2, TargetedConfig(alphas=(16 / 255,), steps=4), device=CPU)
    (row,) = res.rows
    for k in ("psnr_target_hr", "psnr_source_hr", "psnr_lr", "psnr_lr_target", "psnr_sr"):
        assert math.isfinite(row[k])
    assert row["psnr_target_hr"] > res.clean["psnr_target_hr"]
    assert row["psnr_lr"] > row["psnr_lr_target"]  # the LR still looks like the source


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def carn_m(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """The official CARN-M x4 weights, exported to ONNX and opened like any user model."""
    from sreval.exporters import ARCHS, export_onnx, load_weights, read_checkpoint
    from sreval.zoo import open_model as load_model

    spec = ARCHS["carn_m"]
    net = spec.build(4).eval()
    load_weights(net, spec, read_checkpoint(assets / "weights/carn_m/carn_m.pth"), "carn_m.pth")
    path = export_onnx(net, spec, tmp_path_factory.mktemp("carn") / "carn_m.onnx", scale=4,
                       metadata={"sreval.name": "carn_m"})
    return load_model(path, device="cpu").torch()


def set5_crops(assets: Path, names: tuple[str, ...], crop: int) -> list[Sample]:
    from sreval.data import load_dataset

    samples = {s.name: s for s in load_dataset(assets / "datasets/Set5", 4)}
    return [centre_crop_pair(samples[n], crop, 4) for n in names]


def test_carn_m_paper_attacks_on_real_images(carn_m: torch.nn.Module, assets: Path) -> None:
    """Real weights, 2-step attacks on 24x24 LR crops: the paper's qualitative findings hold."""
    crops = set5_crops(assets, ("baby", "bird"), 24)
    uni = run_universal(carn_m, crops, 4, UniversalConfig(alphas=(8 / 255,), steps=2), device=CPU)
    for r in uni.rows:  # one shared delta damages the SR output far more than the LR input
        assert r["psnr_sr"] < r["psnr_lr"] - 2, r  # measured: LR 34.5 / 35.1, SR 29.6 / 28.7 dB
    part = run_partial(carn_m, crops[:1], 4, BasicConfig(alphas=(8 / 255,), steps=2), device=CPU)
    (row,) = part.rows
    assert row["psnr_sr"] > row["psnr_sr_inside"] + 3
    mse = row["permeation"]["mse_y"]
    assert mse[0] > 0 and mse[0] > 10 * mse[-1]  # measured ring MSE 5.8, 0.65, 0.14, 0.07, 0.02


def test_carn_m_targeted_on_foreman(carn_m: torch.nn.Module, assets: Path) -> None:
    """The paper's showcase pair, centre crops of 32x32 LR to fit the test budget."""
    from sreval.attacks.targeted import foreman_frames

    pair = load_pair(*foreman_frames(), 4)
    assert pair.source.hr.shape == (288, 352, 3) and pair.source.lr.shape == (72, 88, 3)
    small = TargetedPair(centre_crop_pair(pair.source, 32, 4), centre_crop_pair(pair.target, 32, 4))
    res = run_targeted(carn_m, small, 4, TargetedConfig(alphas=(16 / 255,), steps=3), device=CPU)
    (row,) = res.rows
    # measured: target 23.9 -> 28.1 dB, own HR 37.5 -> 28.4 dB after 3 steps
    assert row["psnr_target_hr"] > res.clean["psnr_target_hr"] + 2
    assert row["psnr_source_hr"] < res.clean["psnr_source_hr"] - 3
    assert row["psnr_lr_rgb"] >= 20 * math.log10(255 / 16) - 1e-6  # l_inf <= 16/255 bounds the MSE
