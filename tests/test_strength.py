"""The shared loop's methods (parametrized over its registry, timm-style), the straight-through
8-bit delivery, the `strongest` ensemble and the evidence checks, on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sreval.attacks.basic import GradientAttack, attack_image, run_basic
from sreval.cli.base import print_evidence
from sreval.config import ATTACK_METHODS, EFFORTS, BasicConfig, Effort, METHODS, Method, NORMS, parse_alpha
from sreval.attacks.common import (
    EOT_SAMPLES, Expectation, deliver, measured_mse, mse_to, objective, per_sample, randomness,
)
from sreval.attacks.evidence import evidence, from_rows
from sreval.attacks.optim import apgd_checkpoints, l2_norm, optimize, project
from sreval.data import Sample, downscale
from sreval.errors import ConfigError
from sreval.evaluation import measure, super_resolve
from sreval.htmlreport import render_report
from tests.test_cli import make_dataset, run
from tests.tiny import TinySR, export

CPU = torch.device("cpu")
BUDGETS = {"linf": [2 / 255, 8 / 255], "l2": [0.3, 1.2]}


def images(n: int = 2, h: int = 10, w: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.round(torch.rand(n, 3, h, w, generator=g) * 255) / 255,
            torch.rand(n, 3, 2 * h, 2 * w, generator=g))


def dist(d: torch.Tensor, norm: str) -> torch.Tensor:
    return d.flatten(1).abs().amax(1) if norm == "linf" else l2_norm(d).flatten()


def attack(model: torch.nn.Module, method: str, norm: str, **kw: object) -> GradientAttack:
    restarts = 2 if method in ("pgd", "apgd") else 1
    return GradientAttack(model, BUDGETS[norm], steps=6, method=method, norm=norm, restarts=restarts, **kw)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reference", ["hr", "clean-sr"])
def test_every_method_stays_in_budget_box_and_grid(model: torch.nn.Module, method: str, norm: str,
                                                   reference: str) -> None:
    x, hr = images()
    xa, trace = attack(model, method, norm, reference=reference).run(x, hr if reference == "hr" else None)
    eps = torch.tensor(BUDGETS[norm]).repeat_interleave(2)
    assert (dist(xa - x.repeat(2, 1, 1, 1), norm) <= eps * (1 + 1e-5)).all()
    assert xa.min() >= 0 and xa.max() <= 1
    assert torch.allclose(xa * 255, torch.round(xa * 255), atol=1e-3)  # delivered as an 8-bit file
    assert trace.loss.shape == (7, 4) and (trace.bad_grad == 0).all()
    assert (trace.returned_loss > trace.loss[0]).all()  # the loss rose from the start


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_beats_random_noise(model: torch.nn.Module, method: str, norm: str) -> None:
    x, _ = images(1, 12, 12)
    eps = BUDGETS[norm][1]
    xa = GradientAttack(model, eps, steps=10, method=method, norm=norm, reference="clean-sr")(x)
    noise = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    noise = noise * (eps if norm == "linf" else eps / l2_norm(noise))
    with torch.no_grad():
        ref = model(x)
        attacked = (model(xa) - ref).square().mean()
        random = (model((x + noise).clamp(0, 1)) - ref).square().mean()
    assert attacked > 1.5 * random


@pytest.mark.parametrize("method", METHODS)
def test_numbers_do_not_depend_on_batching(model: torch.nn.Module, method: str) -> None:
    """Seeded per-sample starts: two images x two budgets together, or one at a time."""
    x, hr = images()
    together = attack(model, method, "linf", reference="clean-sr").run(x, None, ids=[3, 4])[0]
    for i in range(2):
        for a, e in enumerate(BUDGETS["linf"]):
            one = GradientAttack(model, e, steps=6, method=method, restarts=2 if method in ("pgd", "apgd") else 1,
                                 reference="clean-sr").run(x[i:i + 1], None, ids=[3 + i])[0]
            assert (together[2 * a + i] - one[0]).abs().max() <= 1e-5


def test_restarts_are_never_weaker(model: torch.nn.Module) -> None:
    x, hr = images()
    eps = per_sample(8 / 255, 2, x)
    vg, value = objective(model, mse_to(hr))
    seeds = [(0, 0, 0), (0, 1, 0)]
    _, one = optimize(vg, x, eps, 5, Method("pgd"), seeds=seeds, final_value=value)
    _, three = optimize(vg, x, eps, 5, Method("pgd", restarts=3), seeds=seeds, final_value=value)
    assert len(three.restart_best) == 3
    assert torch.equal(three.restart_best[0], one.restart_best[0])  # restart 0 is the 1-restart run
    assert (three.returned_loss >= one.returned_loss).all()
    assert (three.returned_loss >= torch.stack(three.restart_best).amax(0) - 1e-9).all()


def test_apgd_checkpoints_follow_croce_hein() -> None:
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 -> ceil(p * 100)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < c < 10 for c in apgd_checkpoints(10))


def test_apgd_halves_its_step_when_stalled() -> None:
    """A concave objective with its maximum inside the ball: steps of 2 eps overshoot, the
    objective stops rising, the step is halved, and APGD ends near the maximum."""
    target = torch.full((1, 1, 4, 4), 0.53)

    def vg(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return -(x - target).square().flatten(1).sum(1), -2 * (x - target)

    x0 = torch.full((1, 1, 4, 4), 0.5)
    x, trace = optimize(vg, x0, per_sample(0.1, 1, x0), 40, Method("apgd"), seeds=[(0, 0, 0)])
    assert (x - target).abs().max() < 0.02
    assert trace.returned_loss.item() > -0.01 * 16


def test_projection_l2_then_box() -> None:
    x0 = torch.full((1, 3, 4, 4), 0.9)
    x = x0 + torch.randn(1, 3, 4, 4)
    p = project(x, x0, per_sample(0.5, 1, x0), "l2")
    assert l2_norm(p - x0).item() <= 0.5 + 1e-6 and p.max() <= 1 and p.min() >= 0


def test_l2_delivery_stays_in_the_ball() -> None:
    x0 = torch.round(torch.rand(3, 3, 6, 6) * 255) / 255
    eps = per_sample([0.01, 0.05, 0.2], 3, x0)
    d = torch.randn_like(x0)
    x = project(x0 + d, x0, eps, "l2")
    q = deliver(x, x0, eps, "l2")
    assert (l2_norm(q - x0).flatten() <= eps.flatten() * (1 + 1e-6)).all()
    assert torch.allclose(q * 255, torch.round(q * 255), atol=1e-4)


def test_budgets_by_norm_and_repeats() -> None:
    assert parse_alpha("8/255,8/255") == [8 / 255]  # a repeated budget runs once
    assert parse_alpha("0.5,2", norm="l2") == [0.5, 2.0]
    with pytest.raises(ConfigError):
        parse_alpha("2")  # l_inf: at most 1
    with pytest.raises(ConfigError):
        parse_alpha("-1", norm="l2")


def test_bad_method_options_are_one_line_errors(model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match="method"):
        BasicConfig(alphas=(8 / 255,), method="fgsm")
    with pytest.raises(ConfigError, match="restarts"):
        GradientAttack(model, 8 / 255, method="ifgsm", restarts=3)
    with pytest.raises(ConfigError, match="norm"):
        GradientAttack(model, 8 / 255, norm="l1")
    for bad in (("ifgsm", "square"), ("pgd@target",)):
        with pytest.raises(ConfigError, match="ensemble"):
            BasicConfig(alphas=(8 / 255,), method="strongest", ensemble=bad)
    with pytest.raises(ConfigError, match="effort must be one of quick, standard, thorough"):
        BasicConfig(alphas=(8 / 255,), method="strongest", effort="huge")


def test_quantize_aware_optimises_the_delivered_file(model: torch.nn.Module) -> None:
    """With straight-through rounding the loop's loss IS the loss of the delivered image."""
    x, hr = images(1)
    a = GradientAttack(model, 4 / 255, steps=5, reference="hr", method="pgd", quantize_aware=True)
    xa, trace = a.run(x, hr)
    with torch.no_grad():
        delivered_loss = mse_to(hr)(model(xa))
    assert torch.allclose(trace.returned_loss, delivered_loss, rtol=1e-5)
    # --round-at-end optimises the unrounded image, and only rounds what it found
    raw, t_end = GradientAttack(model, 4 / 255, steps=5, reference="hr", method="pgd", quantize=False).run(x, hr)
    with torch.no_grad():
        assert torch.allclose(t_end.returned_loss, mse_to(hr)(model(raw)), rtol=1e-5)
    assert not torch.allclose(raw * 255, torch.round(raw * 255), atol=1e-3)


def sample(name: str, h: int, w: int, seed: int = 0) -> Sample:
    hr = np.round(np.random.default_rng(seed).random((2 * h, 2 * w, 3)) * 255).astype(np.float32) / 255
    return Sample(name, downscale(hr, 2), hr)


def test_strongest_keeps_the_worst_case_and_names_it(model: torch.nn.Module) -> None:
    samples = [sample("a", 10, 10), sample("b", 9, 11, seed=1)]
    cfg = BasicConfig(alphas=(2 / 255, 8 / 255), steps=4, method="strongest", effort="quick")
    rows = run_basic(model, samples, 2, cfg, device=CPU)
    assert len(rows) == 4
    ifgsm = BasicConfig(alphas=cfg.alphas, steps=4)  # the paper's member runs as on its own
    single = {(r["image"], r["alpha"]): r["psnr_sr"] for r in run_basic(model, samples, 2, ifgsm, device=CPU)}
    assert cfg.ensemble == ("ifgsm", "apgd@clean-sr", "apgd@psnr-sr", "shift")
    for r in rows:
        assert r["psnr_sr"] == min(r["psnr_sr_by_method"].values())
        assert r["method"] in {"ifgsm-linf", "apgd-linf@clean-sr", "apgd-linf@psnr-sr", "shift-linf"}
        assert r["psnr_sr_by_method"]["ifgsm"] == single[(r["image"], r["alpha"])]
        # the converged members' cost: quick is one start with 50 iterations, then 100
        conv = r["convergence"]
        assert set(conv["members"]) == {"apgd-linf@clean-sr", "apgd-linf@psnr-sr"}
        assert all(m["iterations"] == 100 and m["passes"] == 150 and m["restarts"] == 1
                   for m in conv["members"].values())
        assert conv["passes"] == 4 + sum(m["passes"] for m in conv["members"].values())
        assert r["converged"] == all(m["converged"] for m in conv["members"].values())


# ----------------------------------------------------------------------------- convergence


class Rugged(torch.nn.Module):
    """An SR model built to need many iterations: a residual sine network of high frequency
    (sin(60 conv(x)), then sin(3 conv)), whose loss has so many local maxima that every doubling
    of APGD's run finds a higher one, up to a few hundred iterations (measured: 2.3 dB gained
    from 4 to 8 iterations, converged from 256 to 512)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)])
        self.head = torch.nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            for c in (*self.convs, self.head):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) / c.weight[0].numel() ** 0.5)
                c.bias.copy_(torch.rand(c.bias.shape, generator=g) * 6.28 if c is not self.head else 0 * c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sin(3 * self.convs[1](torch.sin(60 * self.convs[0](x))))
        return torch.nn.functional.interpolate(x + 0.05 * self.head(h), scale_factor=2, mode="nearest")


@pytest.mark.parametrize("cap,converged", [(8, False), (512, True)])
def test_strongest_says_whether_it_converged(monkeypatch: pytest.MonkeyPatch, cap: int, converged: bool) -> None:
    """A small cap stops while a doubling still gains (converged false, a failed `converged`
    check), a large one runs until a doubling gains at most the threshold (true)."""

    monkeypatch.setitem(EFFORTS, "quick", Effort(restarts=2, first=4, cap=cap))
    cfg = BasicConfig(alphas=(8 / 255,), method="strongest", effort="quick", ensemble=("apgd@psnr-sr",))
    (row,) = run_basic(Rugged(), [sample("a", 12, 12)], 2, cfg, device=CPU)
    conv = row["convergence"]
    assert row["converged"] is converged and conv["members"]["apgd-linf@psnr-sr"]["converged"] is converged
    gain = conv["gain_last_doubling_db"]
    assert (gain <= 0.1) is converged
    iterations = conv["members"]["apgd-linf@psnr-sr"]["iterations"]
    assert iterations == cap if not converged else 128 <= iterations <= cap
    assert conv["passes"] == 2 * (2 * iterations - 4)  # two starts, each run 4, 8, ..., iterations
    assert len(conv["members"]["apgd-linf@psnr-sr"]["restart_psnr_sr"]) == 2
    (check,) = [c for c in from_rows([row]) if c.name == "converged"]
    assert check.ok is converged and ("try --effort thorough" in check.detail) is not converged


def test_the_measured_loss_is_the_measured_psnr(model: torch.nn.Module) -> None:
    """The psnr-sr member's loss is exactly the error the SR PSNR measures (Y, shaved, 8-bit)."""

    x, _ = images(1, 12, 12)
    xa = deliver(x + 4 / 255 * torch.sign(torch.randn_like(x)), x, per_sample(4 / 255, 1, x))
    sr0 = super_resolve(model, x)
    with torch.no_grad():
        mse = float(measured_mse(model(x), 2)(model(xa)))
    psnr = measure(x, xa, sr0, super_resolve(model, xa), 2)["psnr_sr"]
    assert abs(10 * math.log10(1 / mse) - psnr) < 1e-4


def test_shift_finds_the_worst_case_of_a_linear_model() -> None:
    """Bilinear upscaling is linear and keeps constants: X0 +- alpha everywhere is its worst
    case, which the gradient methods miss; the ensemble keeps it."""
    samples = [sample("a", 16, 16)]
    cfg = BasicConfig(alphas=(8 / 255,), steps=5, method="strongest", effort="quick")
    rows = run_basic(Bilinear(), samples, 2, cfg, device=CPU)
    (row,) = rows
    assert row["method"] == "shift-linf"
    assert row["psnr_sr"] < min(v for k, v in row["psnr_sr_by_method"].items() if k != "shift") - 1
    assert 30 < row["psnr_sr"] < 32.5  # about 20 log10(255 / (8 * 0.859)) = 31.4 dB on Y


def test_strongest_is_only_for_the_basic_attack(model: torch.nn.Module) -> None:
    x, hr = images(1)
    with pytest.raises(ConfigError, match="strongest"):
        attack_image(model, x, hr, BasicConfig(alphas=(8 / 255,), method="strongest"), "hr")


# ----------------------------------------------------------------------------- evidence


def test_evidence_passes_on_a_sound_attack(model: torch.nn.Module) -> None:
    samples = [sample("a", 12, 12)]
    cfg = BasicConfig(alphas=(1 / 255, 4 / 255, 16 / 255), steps=6)
    rows = run_basic(model, samples, 2, cfg, device=CPU)
    assert all(len(r["loss_curve"]) == 7 for r in rows)
    ev = evidence(model, samples, 2, cfg, rows, CPU)
    assert ev["ok"], ev
    names = [c["name"] for c in ev["checks"]]
    assert names == ["gradient", "loss_rises", "restarts", "budget_monotone", "tiny_budget", "more_steps",
                     "gradient_free", "loss_stable", "unbounded"]
    assert ev["probes"]["tiny_budget"]["psnr_sr"] > ev["probes"]["tiny_budget"]["needed"]


class Flat(torch.nn.Module):
    """An SR 'model' that ignores its input: every gradient is zero, no attack can move it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3]) + 0 * x.sum()


def test_evidence_flags_a_zero_gradient_and_a_flat_loss() -> None:
    samples = [sample("a", 8, 8)]
    cfg = BasicConfig(alphas=(4 / 255,), steps=3)
    rows = run_basic(Flat(), samples, 2, cfg, device=CPU)
    ev = evidence(Flat(), samples, 2, cfg, rows, CPU, run_probes=False)
    assert not ev["ok"] and {"gradient", "loss_rises"} <= set(ev["failed"])


class Staircase(torch.nn.Module):
    """A graph with a non-differentiable step that masks the gradient: it rounds its input to
    16 levels (zero gradient everywhere), yet its output moves with the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(torch.round(x * 16) / 16, scale_factor=2, mode="nearest")


class Noisy(torch.nn.Module):
    """A model with random noise inside (dropout left on, a noise input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear") + 0.05 * torch.randn(
            x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3])


class Bilinear(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _checks(model: torch.nn.Module, random_output: float | None = None) -> dict[str, dict]:
    samples = [sample("a", 12, 12)]
    cfg = BasicConfig(alphas=(4 / 255, 16 / 255), steps=6)
    rows = run_basic(model, samples, 2, cfg, device=CPU)
    ev = evidence(model, samples, 2, cfg, rows, CPU, random_output=random_output)
    return {c["name"]: c for c in ev["checks"]}


def test_the_masking_indicators_pass_on_a_sound_model(model: torch.nn.Module) -> None:
    checks = _checks(model, random_output=0.0)
    assert all(checks[n]["ok"] for n in ("gradient_free", "loss_stable", "unbounded", "random_output")), checks
    assert "the same on every run" in checks["random_output"]["detail"]


def test_a_masked_gradient_trips_the_unbounded_indicator() -> None:
    checks = _checks(Staircase())
    assert not checks["unbounded"]["ok"] and "gradient masking" in checks["unbounded"]["detail"]


def test_a_gradient_free_win_trips_its_indicator() -> None:
    """On a linear model X0 +- alpha beats I-FGSM (the gradient misleads its sign steps)."""
    checks = _checks(Bilinear())
    assert not checks["gradient_free"]["ok"] and "shift" in checks["gradient_free"]["detail"]


def test_a_random_model_is_detected_and_attacked_through_its_expectation() -> None:

    noisy = Noisy()
    x, _ = images(1, 12, 12)
    spread = randomness(noisy, x)
    assert spread > 0 and randomness(Bilinear(), x) == 0
    assert randomness(Expectation(noisy), x) < spread  # the mean of 8 runs is steadier
    assert not _checks(noisy)["loss_stable"]["ok"]  # attacked as it is, its loss jumps at random
    checks = _checks(Expectation(noisy), random_output=spread)
    assert checks["random_output"]["ok"] and f"mean of {EOT_SAMPLES} runs" in checks["random_output"]["detail"]


def test_restarts_that_disagree_are_flagged() -> None:
    conv = {"passes": 10, "gain_last_doubling_db": 0.0, "threshold_db": 0.1, "effort": "standard"}
    rows = [{"image": "a", "alpha": 8 / 255, "psnr_sr": 20.0, "converged": True,
             "convergence": {**conv, "restart_spread_db": spread}} for spread in (0.05, 0.8)]
    (agree,) = [c for c in from_rows(rows[:1]) if c.name == "restarts_agree"]
    (apart,) = [c for c in from_rows(rows) if c.name == "restarts_agree"]
    assert agree.ok and not apart.ok and "0.80 dB" in apart.detail


def test_evidence_flags_damage_that_falls_with_the_budget() -> None:
    rows = [{"image": "a", "alpha": 2 / 255, "psnr_sr": 30.0}, {"image": "a", "alpha": 8 / 255, "psnr_sr": 33.0}]
    (monotone,) = [c for c in from_rows(rows) if c.name == "budget_monotone"]
    assert not monotone.ok and "a: 30.00 dB at 2/255 < 33.00 dB at 8/255" in monotone.detail


def test_every_attack_method_is_accepted_by_the_runner(model: torch.nn.Module) -> None:
    for m in ATTACK_METHODS:
        rows = run_basic(model, [sample("a", 8, 8)], 2, BasicConfig(alphas=(4 / 255,), steps=2, method=m, effort="quick"), device=CPU)
        assert math.isfinite(rows[0]["psnr_sr"]) and rows[0]["method"]


# ----------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> "object":

    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> "object":

    return make_dataset(tmp_path_factory.mktemp("d") / "set")


@pytest.mark.parametrize("method,norm,alpha", [("strongest", "linf", "2/255,8/255"), ("apgd", "l2", "0.5,1"),
                                              ("pgd", "linf", "4/255")])
def test_cli_methods_record_evidence(onnx_model: "object", dataset: "object", tmp_path: "object", method: str,
                                     norm: str, alpha: str) -> None:


    out = tmp_path / "run"
    extra = ["--restarts", "2"] if method == "pgd" else ["--effort", "quick"] if method == "strongest" else []
    r = run("attack", onnx_model, "--data", dataset, "--alpha", alpha, "--steps", "3", "--method", method,
            "--norm", norm, "--out", out, "--device", "cpu", *extra)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["method"] == method and rep["config"]["norm"] == norm
    assert {c["name"] for c in rep["evidence"]["checks"]} >= {"gradient", "loss_rises", "tiny_budget"}
    # the winner's loss curve: 3 steps, or a converged member's best run (quick: 50 or 100)
    assert all(len(row["loss_curve"]) in ((4,) if method != "strongest" else (4, 51, 101)) for row in rep["results"])
    if method == "strongest":  # per-row convergence in the JSON, the summary, the CLI and the HTML report
        assert all("converged" in row for row in rep["results"]) and "n_converged" in rep["summary"][0]
        assert "converged" in {c["name"] for c in rep["evidence"]["checks"]} and "converged" in r.output

        render_report(out)
        assert "Convergence of `strongest` per budget" in (out / "report.html").read_text()
    for c in rep["evidence"]["checks"]:  # a failed check is a warning line too, never silent
        assert (f"sanity check {c['name']} failed" in r.output) == (not c["ok"])


def test_cli_warns_on_a_failed_check(capsys: pytest.CaptureFixture[str]) -> None:
    """A failed check is one plain-text warning line (an image named like markup stays as is)."""
    report = {"evidence": {"checks": [{"name": "gradient", "ok": False, "detail": "zero gradient: [/x] at 4/255"},
                                      {"name": "loss_rises", "ok": True, "detail": "fine"}]}}
    print_evidence(report)
    text = capsys.readouterr().out
    assert "warning: sanity check gradient failed: zero gradient: [/x] at 4/255" in text
    assert "loss_rises" not in text


def test_sweep_runs_the_method_it_was_given(onnx_model: "object", dataset: "object", tmp_path: "object") -> None:
    """The sweep passes its method to every basic cell (once, `strongest` silently became
    ifgsm there); the other attacks of a strongest sweep use ifgsm."""


    out = tmp_path / "sweep"
    r = run("sweep", "--models", onnx_model, "--data", dataset, "--attacks", "basic,partial", "--alpha", "8/255",
            "--steps", "2", "--method", "strongest", "--effort", "quick", "--out", out, "--device", "cpu",
            "--keep-images", "0")
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "report.json").read_text())["results"]
    basic = [x for x in rows if x["attack"] == "basic"]
    assert basic and all(set(x["psnr_sr_by_method"]) == {"ifgsm", "apgd@clean-sr", "apgd@psnr-sr", "shift"}
                         for x in basic)
    assert {x["method"] for x in rows if x["attack"] == "partial"} == {"ifgsm-linf"}


@pytest.mark.parametrize("command", ["partial", "universal", "targeted", "defense"])
def test_every_attack_report_has_evidence(onnx_model: "object", dataset: "object", tmp_path: "object",
                                          command: str) -> None:
    """The checks an attack's own rows allow are in every attack report, not only `attack`'s."""


    images = sorted((dataset / "HR").glob("*.png"))
    args = {"partial": ["partial", onnx_model, "--data", dataset],
            "universal": ["universal", onnx_model, "--data", dataset],
            "targeted": ["targeted", onnx_model, "--source", images[0], "--target", images[1]],
            "defense": ["attack", onnx_model, "--data", dataset, "--defense", "resize"]}[command]
    out = tmp_path / "run"
    r = run(*args, "--alpha", "8/255", "--steps", "2", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "report.json").read_text())["evidence"]
    names = {c["name"] for c in ev["checks"]}
    assert {"gradient", "loss_rises", "budget_monotone"} <= names and ev["ok"], ev
    assert "tiny_budget" not in names  # the probes are the basic attack's
