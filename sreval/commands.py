"""The public API: one function per CLI command, each returning the report the CLI writes
(report.json + results.csv, written only when given `out=`), with the CLI's defaults. Each job
is one `sreval.jobs.run_job` call around its own computation.

`model` is an ONNX file, a zoo name (built on first use where that needs no download), or a
model from `load_model`. Every job also takes the shared options of `sreval.jobs.JobOptions`:
`out`, `save_images`, `data_root`, `limit`, `device`, `progress` (called with (done, total) as
the work advances) and `conventions` (scale, range, color, layout, preupsampled, output,
inputs: what the file's metadata and the probes would otherwise decide).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sreval import checkpoint, zoo
from sreval.analysis import (IndexConfig, basic_psnr_from_report, common_scale, correlation, matrix_csv,
                             run_index, run_transfer, unique_names)
from sreval.attacks.basic import run_basic
from sreval.attacks.common import Expectation, randomness
from sreval.attacks.evidence import evidence
from sreval.attacks.partial import run_partial
from sreval.attacks.square import NOTE as SQUARE_NOTE, SquareConfig, choose_method, run_square
from sreval.attacks.targeted import TargetedConfig, foreman_frames, load_pair, require_file, run_targeted
from sreval.attacks.universal import UniversalConfig, amplified, run_universal
from sreval.config import PAPER_ALPHAS, BasicConfig, LoopOptions, check_steps, parse_alpha, parse_defenses
from sreval.conventions import Overrides
from sreval.convert import unsupported_ops
from sreval.data import Sample
from sreval.defenses import evaluate_defended, run_defended_attack
from sreval.detect import propose, weakness
from sreval.errors import ConfigError, SrevalError, UnsupportedOperatorError
from sreval.evaluation import Row, evaluate_clean, images, to_tensor
from sreval.files import check_writable_dir
from sreval.io import encode_image
from sreval.jobs import DEVICE, JobOptions, JobResult, Run, as_model, measure_rows, rows_evidence, run_job, with_method
from sreval.model import ConversionError, LoadedModel, SRModel
from sreval.registry import attack_entry
from sreval.report import Report, claims_out_dir, read_report

if TYPE_CHECKING:  # the typed **options of every job (PEP 692)
    from typing_extensions import Unpack


# ----------------------------------------------------------------------------- models


def load_model(model: str | Path, *, device: str = "auto", **conventions: Any) -> LoadedModel:
    """An ONNX file or zoo name as an `nn.Module` on RGB NCHW [0, 1]: conventions resolved,
    the onnx2torch conversion checked against onnxruntime (a ParityError where they differ)."""
    return LoadedModel(zoo.open_model(model, device=device, check=False, overrides=Overrides.of(conventions)))


# ----------------------------------------------------------------------------- inspect, evaluate


def inspect(model: str | Path, *, device: str = "auto", conventions: Overrides | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`sreval inspect`: what sreval makes of a model file, without running an attack."""
    m = as_model(model, device, conventions, check=False)
    info: dict[str, Any] = {
        "path": str(m.path), "sha256": m.sha256, "opset": m.opset,
        "input": f"{m.input.name} {['?' if d is None else d for d in m.input_dims]}",
        "scale": m.conventions.scale, "conventions": m.conventions.as_dict(),
        "sources": ", ".join(f"{k}: {v}" for k, v in m.sources.items()),
        "precision": m.precision,
    }
    if m.straight_through:
        info["straight_through"] = (f"{', '.join(m.straight_through)}: the attack's gradient through them is a "
                                    f"straight-through estimate")
    try:
        proposal = propose(m)
        info["detected"] = proposal.summary() or "nothing to detect"
        doubt = weakness(proposal)
        if doubt:
            info["warning"] = doubt
    except SrevalError as e:
        info["detected"] = f"unavailable: {e}"
    c = m.describe().get("checkpoint")
    if c is not None:
        info["checkpoint"] = (f"{c['file']}: {c['architecture']} x{c['scale']}, exported with {c['exporter']}"
                              + (f" at a fixed {c['export_size']}" if c.get("export_size") else ""))
    missing = unsupported_ops(m.proto)
    info["unsupported_ops"] = missing
    try:
        p = None if missing else m.check_parity(raise_on_fail=False)
    except ConversionError as e:
        p, info["conversion"] = None, f"FAILED: {e}"
    if p is not None:
        info["parity"] = f"{'ok' if p.ok else 'FAILED'}: {p.describe()}, input-gradient L1 = {p.grad_l1:.3g}"
    else:
        info["runtime"] = ("onnxruntime only: `evaluate` works, `attack --method square` runs a "
                           "gradient-free attack (weaker than I-FGSM)")
    return info


@claims_out_dir
def evaluate(model: Any, data: str | Path = "default", *, runtime: str = "auto", defense: Sequence[str] | str | None = None,
             seed: int = 0, **run: Unpack[JobOptions]) -> Report:
    """`sreval evaluate`: clean SR PSNR/SSIM against HR, in the report schema (attack 'none').
    `runtime` 'auto' uses the PyTorch conversion, or onnxruntime where onnx2torch cannot convert
    the model; 'onnxruntime' skips the conversion; the report says which ran. `defense` adds
    the clean rows through each defense ('none+D')."""
    names = parse_defenses(defense) if defense else ()
    if names and runtime != "auto":
        raise ConfigError("--defense works with --runtime auto only")
    opened = as_model(model, run.get("device", DEVICE), run.pop("conventions", None), check=False)
    module, ran = (opened.torch(), "torch") if names else opened.runtime(runtime)

    def job(r: Run) -> JobResult:
        saver, dev = r.saver, r.model.device
        rows = (evaluate_defended(module, r.samples, r.scale, names, device=dev, progress=r.progress, saver=saver)
                if names else evaluate_clean(module, r.samples, r.scale, device=dev, progress=r.progress, saver=saver))
        config = {"seed": seed, "defenses": list(names)} if names else {"seed": seed, "runtime": ran}
        return JobResult(rows, config, sections={"defense": {"defenses": list(names)}} if names else {})

    return run_job("clean", opened, data, job, seed=seed, parity=ran == "torch", command="evaluate", **run)


# ----------------------------------------------------------------------------- the basic attack


@claims_out_dir
def attack(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    reference: str = "auto", quantize: bool = True, batch: int | None = None, seed: int = 0, method: str = "ifgsm",
    loop: LoopOptions | None = None, queries: int = 500, precision: str = "fp32", sanity: bool = True,
    defense: Sequence[str] | str | None = None, **run: Unpack[JobOptions],
) -> Report:
    """`sreval attack`: the basic attack over a dataset. `method` is one of the shared loop's
    (ifgsm, pgd, apgd, mifgsm, strongest; its other options in `loop`, whose own method
    `method` replaces), or 'square' (the gradient-free Square attack through onnxruntime;
    'auto': square where onnx2torch cannot convert the model). `precision` bf16/fp16 runs the
    attack in mixed precision; the report then states the SR PSNR difference against float32
    on the first images. `sanity` runs the evidence checks into the report's `evidence`.
    `defense` (resize, self-ensemble) adds the rows basic+D (the bare attack through D) and
    basic+D-adaptive (the attack through D)."""
    gradient = method not in ("square", "auto")
    loop = with_method(loop, method if gradient else "ifgsm")
    # Validate the cheap options before the expensive model conversion.
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, precision=precision,
                      **loop.fields())
    names = parse_defenses(defense) if defense else ()
    if names and (not gradient or method == "strongest"):
        raise ConfigError(f"--defense works with the gradient methods ifgsm, pgd, apgd, mifgsm, not {method}")
    if names:
        return run_job("defense", model, data, lambda r: _defended(r, cfg, names), seed=seed, command="attack", **run)
    torch.manual_seed(seed)
    m = as_model(model, run.get("device", DEVICE), run.pop("conventions", None), check=False)
    chosen, fallback = choose_method(m, method)
    if chosen == "square":
        return run_job("basic", m, data, lambda r: _square(r, cfg, queries, fallback), seed=seed, parity=False,
                       command="attack", **run)
    return run_job("basic", m, data, lambda r: _basic(r, cfg, sanity), seed=seed, command="attack", **run)


def _basic(r: Run, cfg: BasicConfig, sanity: bool) -> JobResult:
    net, ref = r.model.torch(), cfg.reference_for(r.samples)
    random_output = randomness(net, to_tensor(r.samples[0].lr, r.model.device))
    if random_output:  # dropout or noise inside: attack (and measure) its expectation
        net = Expectation(net)
    rows = run_basic(net, r.samples, r.scale, cfg, device=r.model.device, progress=r.progress,
                     saver=r.saver)
    sections: dict[str, Any] = {"evidence": evidence(net, r.samples, r.scale, cfg, rows, r.model.device,
                                                     run_probes=sanity, straight_through=r.model.straight_through,
                                                     random_output=random_output)}
    if cfg.precision != "fp32":
        sections["precision_check"] = _precision_check(r.model, r.samples[:2], r.scale, cfg, rows)
    return JobResult(rows, {**asdict(cfg), "reference": ref}, sections=sections, quantize=cfg.quantize, reference=ref)


def _precision_check(model: SRModel, samples: list[Sample], scale: int, cfg: BasicConfig,
                     rows: list[Row]) -> dict[str, Any]:
    """Re-attack the first images in float32: what mixed precision changes in SR PSNR."""
    ref_rows = run_basic(model.torch(), samples, scale, replace(cfg, precision="fp32"), device=model.device)
    mixed = {(r["image"], r["alpha"]): r["psnr_sr"] for r in rows}
    diffs = [{"image": r["image"], "alpha": r["alpha"], "psnr_sr_fp32": r["psnr_sr"],
              f"psnr_sr_{cfg.precision}": mixed[(r["image"], r["alpha"])],
              "difference": mixed[(r["image"], r["alpha"])] - r["psnr_sr"]} for r in ref_rows]
    finite = [abs(d["difference"]) for d in diffs if math.isfinite(d["difference"])]
    return {"precision": cfg.precision, "images": [s.name for s in samples], "rows": diffs,
            "mean_abs_difference_db": sum(finite) / len(finite) if finite else None}


def _square(r: Run, cfg: BasicConfig, queries: int, fallback: str | None) -> JobResult:
    """The Square attack through onnxruntime (`sreval.attacks.square`), attack 'square'."""
    scfg = SquareConfig(alphas=cfg.alphas, queries=queries, quantize=cfg.quantize, seed=cfg.seed)
    rows = run_square(r.model.ort(), r.samples, r.scale, scfg, device=r.model.device, progress=r.progress,
                      saver=r.saver)
    note = SQUARE_NOTE + (f"; {fallback}" if fallback else "")
    return JobResult(
        rows, {**asdict(scfg), "method": "square", "reference": "clean-sr", "runtime": "onnxruntime", "note": note},
        conventions={"square": "loss = MSE(f(X), f(X0)); X0 + alpha * stripes, then one +-alpha "
                               "square window per query, kept where the loss grows"},
        sections={"blackbox": {"method": "square", "queries": scfg.queries, "p_init": scfg.p_init,
                               "weaker_than_gradient_attack": True, "note": note}},
        quantize=cfg.quantize, reference="clean-sr")


def _defended(r: Run, cfg: BasicConfig, names: Sequence[str]) -> JobResult:
    """Rows 'basic' (no defense), 'basic+D' (the bare attack's examples through D: the paper's
    setting) and 'basic+D-adaptive' (attack through D)."""
    rows = run_defended_attack(r.model.torch(), r.samples, r.scale, cfg, names, device=r.model.device,
                               progress=r.progress, saver=r.saver)
    ref = cfg.reference_for(r.samples)
    return JobResult(
        rows, {**asdict(cfg), "reference": ref, "defenses": list(names)},
        conventions={"psnr_sr": "through the row's defense: SR of attacked LR vs SR of clean LR",
                     "psnr_sr_vs_bare": "SR of attacked LR through the defense vs the bare model's clean SR"},
        sections={"defense": {"defenses": list(names), "non_adaptive": "basic+D: attack the bare model, "
                              "evaluate through D", "adaptive": "basic+D-adaptive: attack through D"},
                  "evidence": rows_evidence([r for r in rows if r.get("loss_curve")])},
        quantize=cfg.quantize, reference=ref)


# ----------------------------------------------------------------------------- the rest of the paper


@claims_out_dir
def universal(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    crop: int | None = None, holdout: float | None = None, reference: str = "auto", quantize: bool = True,
    batch: int | None = None, loss: str = "paper", seed: int = 0, loop: LoopOptions | None = None,
    **run: Unpack[JobOptions],
) -> Report:
    """`sreval universal`: one perturbation per budget for all images (centre crops), saved as
    .npy and amplified PNG; LR/SR PSNR per image, on fit and held-out images. `loss` 'paper'
    is eq. 6 (mean of the images' L2 norms), 'official' the official code's mean of MSEs."""
    loop = with_method(loop)
    cfg = UniversalConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=steps, crop=crop, holdout=holdout,
                          reference=reference, quantize=quantize, seed=seed, batch=batch, loss=loss,
                          **loop.fields(ensemble=False))

    def job(r: Run) -> JobResult:
        res = run_universal(r.model.torch(), r.samples, r.scale, cfg, device=r.model.device,
                            progress=r.progress, saver=r.saver)
        files: dict[str, bytes | str] = {}
        listed = []
        for a, delta in res.perturbations.items():
            stem = f"perturbation_a{a * 255:g}"
            buf = io.BytesIO()
            np.save(buf, delta)
            files[f"{stem}.npy"], files[f"{stem}.png"] = buf.getvalue(), encode_image(amplified(delta, a))
            listed.append({"alpha": a, "npy": f"{stem}.npy", "png": f"{stem}.png",
                           "linf": float(np.abs(delta).max()), "mean_abs": float(np.abs(delta).mean())})
        return JobResult(
            res.rows, {**asdict(cfg), "crop": res.crop, "reference": res.reference},
            conventions={"crop": f"central {res.crop}x{res.crop} LR crop of every image, HR crop above it",
                         "perturbation": "HxWx3 float32 in [-alpha, alpha]; PNG shows delta/(2 alpha)+0.5",
                         "group": "fit: used to fit the perturbation; holdout: never seen while fitting"},
            sections={"universal": {"crop": res.crop, "fit": res.fit, "holdout": res.holdout, "perturbations": listed},
                      "evidence": rows_evidence([r for r in res.rows if r.get("group") == "fit"])},
            quantize=quantize, reference=res.reference, files=files)

    return run_job("universal", model, data, job, seed=seed, **run)


@claims_out_dir
def partial(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    reference: str = "auto", quantize: bool = True, batch: int | None = None, seed: int = 0,
    loop: LoopOptions | None = None, **run: Unpack[JobOptions],
) -> Report:
    """`sreval partial`: attack the central half of each LR, measure outside its HR
    counterpart, and the decay of the damage with distance (section 'permeation')."""
    loop = with_method(loop)
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())

    def job(r: Run) -> JobResult:
        res = run_partial(r.model.torch(), r.samples, r.scale, cfg, device=r.model.device,
                          progress=r.progress, saver=r.saver)
        return JobResult(
            res.rows, {**asdict(cfg), "reference": res.reference},
            conventions={"mask": "LR pixels with w/4 <= x < 3w/4 and h/4 <= y < 3h/4 (eq. 10)",
                         "psnr_sr": "SR of attacked vs clean LR, only OUTSIDE the HR mask (shaved)",
                         "psnr_sr_inside": "the same, only inside the HR mask",
                         "permeation": "mean squared error of Y (0..255) per ring of HR pixels at Chebyshev "
                                       "distance d LR pixels from the HR mask (shaved border excluded)"},
            sections={"permeation": [{"alpha": a, **p} for a, p in res.permeation.items()],
                      "evidence": rows_evidence(res.rows)},
            quantize=quantize, reference=res.reference)

    return run_job("partial", model, data, job, seed=seed, **run)


@claims_out_dir
def targeted(
    model: Any, *, source: str | Path | None = None, target: str | Path | None = None,
    alpha: str | Sequence[float] = "16/255", steps: int = 50, quantize: bool = True, seed: int = 0,
    loop: LoopOptions | None = None, **run: Unpack[JobOptions],
) -> Report:
    """`sreval targeted`: push f(X) towards a target HR image (eq. 11), from the source HR
    frame's MATLAB-bicubic LR. Default pair: the two foreman frames of the shared assets."""
    source = source if source is not None else foreman_frames()[0]
    target = target if target is not None else foreman_frames()[1]
    loop = with_method(loop)
    cfg = TargetedConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps), quantize=quantize,
                         seed=seed, **loop.fields(ensemble=False))
    require_file("source", source)
    require_file("target", target)

    def job(r: Run) -> JobResult:
        pair = load_pair(source, target, r.scale)
        res = run_targeted(r.model.torch(), pair, r.scale, cfg, device=r.model.device, progress=r.progress,
                           saver=r.saver)
        return JobResult(
            res.rows, {**asdict(cfg), "seed": seed},
            conventions={"psnr_target_hr": "SR of attacked LR vs the target HR",
                         "psnr_source_hr": "SR of attacked LR vs the source's own HR (= psnr_hr)",
                         "psnr_lr_target": "attacked LR vs the target's LR (MATLAB bicubic)"},
            sections={"targeted": {"source": pair.source.name, "target": pair.target.name, "clean": res.clean},
                      "evidence": rows_evidence(res.rows, descend=True)},
            quantize=quantize, reference="target HR",
            data={"source": str(source), "target": str(target), "hr_size": list(pair.source.hr.shape[:2])})

    return run_job("targeted", model, None, job, seed=seed, **run)


@claims_out_dir
def transfer(
    models: Sequence[Any], data: str | Path = "default", *, alpha: str | Sequence[float] = "8/255", steps: int = 50,
    reference: str = "auto", quantize: bool = True, batch: int | None = None, seed: int = 0,
    loop: LoopOptions | None = None, **run: Unpack[JobOptions],
) -> Report:
    """`sreval transfer`: basic-attack examples of each source model fed to each target model;
    SR PSNR matrix (rows = source, columns = target) as transfer_matrix.csv and in report.json.
    `loop.method` 'mifgsm' is the momentum attack made for transfer."""
    loop = with_method(loop)
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    if len(models) < 2:
        raise ConfigError(f"transfer needs at least two models, got {len(models)}")

    def job(r: Run) -> JobResult:
        names = unique_names([m.describe()["name"] for m in r.models])
        scale = common_scale({n: m.conventions.scale for n, m in zip(names, r.models)})
        res = run_transfer({n: m.torch() for n, m in zip(names, r.models)}, r.samples, scale, cfg,
                           device=r.model.device, progress=r.progress)
        return JobResult(
            res.rows, {**asdict(cfg), "reference": res.reference},
            conventions={"psnr_sr": "target model: SR of the source's adversarial LR vs SR of the clean LR"},
            sections={"transfer": {"models": names, "rows": "source", "columns": "target", "metric": "psnr_sr",
                                   "matrix": [{"alpha": a, "psnr_sr": m} for a, m in res.matrix.items()],
                                   "csv": "transfer_matrix.csv"}},
            quantize=quantize, reference=res.reference, files={"transfer_matrix.csv": matrix_csv(names, res.matrix)})

    return run_job("transfer", list(models), data, job, seed=seed, **run)


@claims_out_dir
def index(
    model: Any, data: str | Path = "default", *, alpha: str | float = "1/255", samples: int = 1024,
    batch: int | None = 64, steps: int = 50, reference: str = "auto", quantize: bool = True,
    attack_report: Path | None = None, seed: int = 0, **run: Unpack[JobOptions],
) -> Report:
    """`sreval index`: the robustness index per image (sec. 5.2) and its Pearson/Spearman
    correlation with the basic attack's SR PSNR (run here, or read from `attack_report`)."""
    alphas = parse_alpha(alpha)
    if len(alphas) != 1:
        raise ConfigError(f"index takes one budget, got {len(alphas)}")
    icfg = IndexConfig(alpha=alphas[0], samples=samples, batch=batch, seed=seed)
    bcfg = BasicConfig(alphas=(icfg.alpha,), steps=check_steps(steps), reference=reference,
                       quantize=quantize, seed=seed)
    previous = read_report(attack_report) if attack_report is not None else None

    def job(r: Run) -> JobResult:
        net, names = r.model.torch(), [s.name for s in r.samples]
        rows = run_index(net, r.samples, icfg, device=r.model.device, progress=r.progress)
        if previous is not None:
            basic_rows, psnr_from = [], str(attack_report)
            psnr_sr = basic_psnr_from_report(previous, icfg.alpha, names, r.model.sha256)
        else:
            basic_rows = run_basic(net, r.samples, r.scale, bcfg, device=r.model.device, progress=r.progress)
            psnr_from = f"basic attack run here (steps {bcfg.steps}, reference {bcfg.reference_for(r.samples)})"
            psnr_sr = {r["image"]: r["psnr_sr"] for r in basic_rows}
        for r in rows:
            r["psnr_sr_basic"] = psnr_sr[r["image"]]
        return JobResult(
            rows + basic_rows, {**asdict(icfg), "steps": bcfg.steps, "reference": bcfg.reference,
                                "attack_report": str(attack_report) if attack_report else None},
            conventions={"robustness_index": "max over N_s uniform perturbations Delta_i in [-alpha, alpha] "
                                             "of || grad_X ||f(X) - f(X0)||_2 ||_1 at X = clip01(X0 + Delta_i)"},
            sections={"robustness_index": {"alpha": icfg.alpha, "samples": icfg.samples,
                                           **correlation(rows, psnr_sr), "psnr_sr_from": psnr_from}},
            quantize=quantize)

    return run_job("index", model, data, job, seed=seed, **run)


# ----------------------------------------------------------------------------- checkpoints


def export(model: str | Path, out: Path, *, device: str = "auto") -> dict[str, Any]:
    """`sreval export MODEL.pth -o OUT.onnx`: a PyTorch checkpoint (spandrel recognises the
    architecture) as a verified ONNX file with sreval's metadata, for use elsewhere; then
    opened as sreval opens any model, with the onnx2torch conversion checked."""
    path, out = Path(model), Path(out)
    if not checkpoint.is_checkpoint(path):
        raise ConfigError(f"{path.name}: export takes a PyTorch checkpoint ({', '.join(checkpoint.SUFFIXES)})")
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: the exported file must end in .onnx")
    check_writable_dir(out.parent if str(out.parent) else Path("."))
    done = checkpoint.export_isolated(path, out)
    m = SRModel(out, device=device)
    try:
        p = m.check_parity(raise_on_fail=False)
        conversion: dict[str, Any] = {"ok": p.ok, "max_diff": p.max_diff, "tol": p.tol}
    except (UnsupportedOperatorError, ConversionError) as e:
        conversion = {"ok": False, "error": str(e)}
    return {**asdict(done), "path": str(done.path), "sha256": m.sha256, "conventions": m.conventions.as_dict(),
            "conversion_parity": conversion}


# ----------------------------------------------------------------------------- any attack object


@claims_out_dir
def run_attack(
    name: str, model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS,
    steps: int | None = None, reference: str | None = None, quantize: bool | None = None, seed: int | None = None,
    loop: LoopOptions | None = None, options: Mapping[str, Any] | None = None, **run: Unpack[JobOptions],
) -> Report:
    """`sreval run NAME`: the registered attack object `ATTACKS[name]` on every image at every
    budget, one row per (image, budget) with LR / SR PSNR (and against HR). The attack
    object's own defaults hold for whatever is not given: `steps`, `reference`, `quantize`,
    `seed`, `loop` (its norm, restarts, quantize_aware) and `options` (any other field of the
    attack object) override them. This is how an attack added to the registry with only its
    class runs from the CLI and in sweeps."""
    entry = attack_entry(name)
    if entry.cli != "run" or entry.attack is None:
        raise ConfigError(f"attack {name!r} has its own command: sreval {entry.cli}")
    cls = entry.attack_class()
    given = {"steps": steps, "reference": reference, "quantize": quantize, "seed": seed,
             **({} if loop is None else {k: v for k, v in loop.fields(ensemble=False).items() if k != "method"})}
    kwargs = attack_options(name, cls, {k: v for k, v in given.items() if v is not None}, options or {})
    alphas = parse_alpha(alpha, kwargs.get("norm", "linf"))
    probe = cls(torch.nn.Identity(), eps=alphas, **kwargs)  # validates the options before the model is opened

    def job(r: Run) -> JobResult:
        net = r.model.torch()
        attack_object = cls(net, eps=alphas, **kwargs)
        rows: list[Row] = []
        for i, s, x0, hr in images(r.samples, r.model.device, r.progress):
            xs, trace = attack_object.run(x0, hr, ids=[i])
            rows += measure_rows(net, s, x0, xs, trace, name, alphas, r.scale, r.saver)
        settings = {f.name: getattr(attack_object, f.name) for f in fields(attack_object)
                    if f.name not in ("model", "eps")}
        return JobResult(rows, {"attack": name, "alphas": alphas, **settings, "options": dict(options or {})},
                       conventions={"attack": entry.what}, sections={"evidence": rows_evidence(rows, descend=entry.descend)},
                       quantize=attack_object.quantize, reference=attack_object.reference)

    return run_job(name, model, data, job, seed=probe.seed, **run)


def attack_options(name: str, cls: Any, given: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an attack object: the options given by name and the free-form
    `options`, each a field of the attack object; an unknown or twice-given one is one line."""
    takes = {f.name for f in fields(cls)} - {"model", "eps"}
    twice = sorted(set(given) & set(options))
    if twice:
        raise ConfigError(f"{name}: {', '.join(twice)} given twice (as an option and in --option)")
    unknown = sorted((set(given) | set(options)) - takes)
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)} (it takes {', '.join(sorted(takes))})")
    return {**given, **options}


__all__ = ["load_model", "inspect", "export", "evaluate", "attack", "universal", "partial", "targeted", "transfer",
           "index", "run_attack", "attack_options"]
