"""The public API: one function per CLI command, each returning the report the CLI writes
(report.json + results.csv, written only when given `out=`), with the CLI's defaults; and
`ATTACKS`, the one registry of what a sweep cell can run, read by the CLI, the sweep and the
HTML report.

`model` is an ONNX file, a zoo name (built on first use where that needs no download), or a
model from `load_model`. `conventions` (scale, range, color, layout, preupsampled, output)
override what the file's metadata and the probes say. `progress(done, total)` is called as
the work advances.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sreval import checkpoint, zoo
from sreval.analysis import (IndexConfig, basic_psnr_from_report, common_scale, correlation, matrix_csv,
                             run_index, run_transfer, unique_names)
from sreval.attacks.basic import (APGD, IFGSM, MIFGSM, PGD, STRONGEST, BasicConfig, GradientAttack, LoopOptions,
                                  run_basic)
from sreval.attacks.common import check_steps, parse_alpha
from sreval.attacks.evidence import evidence
from sreval.attacks.partial import PartialIFGSM, run_partial
from sreval.attacks.square import SquareConfig, choose_method, run_square, NOTE as SQUARE_NOTE
from sreval.attacks.targeted import TargetedConfig, TargetedIFGSM, foreman_frames, load_pair, require_file, run_targeted
from sreval.attacks.universal import Universal, UniversalConfig, amplified, run_universal
from sreval.convert import unsupported_ops
from sreval.data import Sample, load_dataset
from sreval.defenses import evaluate_defended, parse_defenses, run_defended_attack
from sreval.detect import propose
from sreval.errors import ConfigError, SrevalError, UnsupportedOperatorError
from sreval.evaluation import ImageSaver, Progress, Row, evaluate_clean, measure, measure_hr, super_resolve, to_tensor
from sreval.files import atomic_write, check_writable_dir
from sreval.io import write_image
from sreval.model import ConversionError, LoadedModel, SRModel
from sreval.run import claims_out_dir, data_info, environment, metric_conventions, model_info, read_report, write_report

PAPER_ALPHAS = "1/255,2/255,4/255,8/255,16/255,32/255"  # the paper's budgets (Fig. 1, 3, 5, 7)


# ----------------------------------------------------------------------------- models and data


def load_model(model: str | Path, *, device: str = "auto", **conventions: Any) -> LoadedModel:
    """An ONNX file or zoo name as an `nn.Module` on RGB NCHW [0, 1]: conventions resolved,
    the onnx2torch conversion checked against onnxruntime (a ParityError where they differ)."""
    return LoadedModel(zoo.open_model(model, device=device, check=False, **conventions))


def _open(model: Any, device: str, conventions: Mapping[str, Any] | None, check: bool = True) -> SRModel:
    """The SRModel behind a MODEL argument; with `check`, its parity verified."""
    if isinstance(model, LoadedModel):
        return model.source
    if isinstance(model, SRModel):
        opened = model
    else:
        given = {k: v for k, v in (conventions or {}).items() if v is not None}
        opened = zoo.open_model(model, device=device, check=False, **given)
    if check:
        opened.check_parity()
    return opened


def _data(spec: str | Path, scale: int, data_root: Path | None, limit: int | None) -> list[Sample]:
    return load_dataset(spec, scale, data_root=data_root, limit=limit)


def _open_run(model: Any, data: str | Path, device: str, conventions: Mapping[str, Any] | None,
              data_root: Path | None, limit: int | None) -> tuple[SRModel, int, list[Sample]]:
    """The parity-checked model, its scale and the dataset at that scale."""
    m = _open(model, device, conventions)
    return m, m.conventions.scale, _data(data, m.conventions.scale, data_root, limit)


def _loop(loop: LoopOptions | None, method: str | None = None) -> LoopOptions:
    loop = loop or LoopOptions()
    return replace(loop, method=method) if method else loop


def rows_evidence(rows: list[Row], *, descend: bool = False) -> dict[str, Any]:
    """The evidence checks an attack's own rows allow (the probes are the basic attack's)."""
    return evidence(None, [], 0, None, rows, None, run_probes=False, descend=descend)


def _extra_file(out: Path | None, name: str, data: bytes | str) -> None:
    if out is not None:
        atomic_write(Path(out) / name, data)


# ----------------------------------------------------------------------------- inspect, evaluate


def inspect(model: str | Path, *, device: str = "auto", conventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`sreval inspect`: what sreval makes of a model file, without running an attack."""
    m = _open(model, device, conventions, check=False)
    info: dict[str, Any] = {
        "path": str(m.path), "sha256": m.sha256, "opset": m.opset,
        "input": f"{m.input.name} {['?' if d is None else d for d in m.input_dims]}",
        "scale": m.conventions.scale, "conventions": m.conventions.as_dict(),
        "sources": ", ".join(f"{k}: {v}" for k, v in m.sources.items()),
    }
    try:
        info["detected"] = propose(m).summary() or "nothing to detect"
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
        info["parity"] = (f"{'ok' if p.ok else 'FAILED'}: max |torch - onnxruntime| = {p.max_diff:.3g} "
                          f"(tol {p.tol:g}), input-gradient L1 = {p.grad_l1:.3g}")
    else:
        info["runtime"] = ("onnxruntime only: `evaluate` works, `attack --method square` runs a "
                           "gradient-free attack (weaker than I-FGSM)")
    return info


@claims_out_dir
def evaluate(
    model: Any, data: str | Path = "default", *, out: Path | None = None, save_images: bool = False,
    data_root: Path | None = None, limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: Mapping[str, Any] | None = None, runtime: str = "auto",
    defense: Sequence[str] | str | None = None,
) -> dict[str, Any]:
    """`sreval evaluate`: clean SR PSNR/SSIM against HR, in the report schema (attack 'none').
    `runtime` 'auto' uses the PyTorch conversion, or onnxruntime where onnx2torch cannot convert
    the model; 'onnxruntime' skips the conversion; the report says which ran. `defense` adds
    the clean rows through each defense ('none+D')."""
    torch.manual_seed(seed)
    if defense:
        return _evaluate_defended(model, data, defense, out, save_images, data_root, limit, device, seed,
                                  progress, conventions, runtime)
    m = _open(model, device, conventions, check=False)
    module, ran = m.runtime(runtime)
    parity = m.check_parity() if ran == "torch" else None
    scale = m.conventions.scale
    samples = _data(data, scale, data_root, limit)
    rows = evaluate_clean(module, samples, scale, device=m.device, progress=progress,
                          saver=ImageSaver.for_run(out, save_images))
    return write_report(
        out, command="evaluate", model=model_info(m, parity), data=data_info(data, samples),
        config={"device": str(m.device), "seed": seed, "runtime": ran},
        environment=environment(str(m.device)), conventions=metric_conventions(scale), results=rows,
    )


def _evaluate_defended(model: Any, data: str | Path, defense: Sequence[str] | str, out: Path | None,
                       save_images: bool, data_root: Path | None, limit: int | None, device: str, seed: int,
                       progress: Progress | None, conventions: Mapping[str, Any] | None,
                       runtime: str) -> dict[str, Any]:
    if runtime != "auto":
        raise ConfigError("--defense works with --runtime auto only")
    names = parse_defenses(defense)
    m, scale, samples = _open_run(model, data, device, conventions, data_root, limit)
    rows = evaluate_defended(m.torch(), samples, scale, names, device=m.device, progress=progress,
                             saver=ImageSaver.for_run(out, save_images))
    return write_report(
        out, command="evaluate", model=model_info(m, m.check_parity()), data=data_info(data, samples),
        config={"device": str(m.device), "seed": seed, "defenses": list(names)},
        environment=environment(str(m.device)), conventions=metric_conventions(scale), results=rows,
        sections={"defense": {"defenses": list(names)}},
    )


# ----------------------------------------------------------------------------- the basic attack


@claims_out_dir
def attack(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    reference: str = "auto", quantize: bool = True, out: Path | None = None, save_images: bool = False,
    batch: int | None = None, data_root: Path | None = None, limit: int | None = None, device: str = "auto",
    seed: int = 0, progress: Progress | None = None, conventions: Mapping[str, Any] | None = None,
    method: str = "ifgsm", loop: LoopOptions | None = None, queries: int = 500, precision: str = "fp32",
    sanity: bool = True, defense: Sequence[str] | str | None = None,
) -> dict[str, Any]:
    """`sreval attack`: the basic attack over a dataset. `method` is one of the shared loop's
    (ifgsm, pgd, apgd, mifgsm, strongest; its other options in `loop`, whose own method
    `method` replaces), or 'square' (the
    gradient-free Square attack through onnxruntime; 'auto': square where onnx2torch cannot
    convert the model). `precision` bf16/fp16 runs the attack in mixed precision; the report
    then states the SR PSNR difference against float32 on the first images. `sanity` runs the
    evidence checks into the report's `evidence`. `defense` (resize, self-ensemble) adds the
    rows basic+D (the bare attack through D) and basic+D-adaptive (the attack through D)."""
    gradient = method not in ("square", "auto")
    loop = _loop(loop, method if gradient else "ifgsm")
    # Validate the cheap options before the expensive model conversion.
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, precision=precision,
                      **loop.fields())
    torch.manual_seed(seed)
    if defense:
        if not gradient or method == "strongest":
            raise ConfigError(f"--defense works with the gradient methods ifgsm, pgd, apgd, mifgsm, not {method}")
        return _defended_attack(model, data, defense, cfg, out, save_images, data_root, limit, device,
                                progress, conventions)
    m = _open(model, device, conventions, check=False)
    chosen, fallback = choose_method(m, method)
    if chosen == "square":
        return _square(m, data, cfg, queries, out, save_images, data_root, limit, progress, fallback)
    parity = m.check_parity()
    scale = m.conventions.scale
    samples = _data(data, scale, data_root, limit)
    ref = cfg.reference_for(samples)
    rows = run_basic(m.torch(), samples, scale, cfg, device=m.device, progress=progress,
                     saver=ImageSaver.for_run(out, save_images))
    sections: dict[str, Any] = {"evidence": evidence(m.torch(), samples, scale, cfg, rows, m.device,
                                                     run_probes=sanity)}
    if precision != "fp32":
        sections["precision_check"] = _precision_check(m, samples[:2], scale, cfg, rows)
    return write_report(
        out, command="attack", model=model_info(m, parity), data=data_info(data, samples),
        config={**asdict(cfg), "reference": ref, "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions=metric_conventions(scale, quantize_lr=quantize, reference=ref),
        results=rows, sections=sections,
    )


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


def _square(m: SRModel, data: str | Path, cfg: BasicConfig, queries: int, out: Path | None, save_images: bool,
            data_root: Path | None, limit: int | None, progress: Progress | None,
            fallback: str | None) -> dict[str, Any]:
    """The Square attack through onnxruntime (`sreval.attacks.square`), attack 'square'."""
    scfg = SquareConfig(alphas=cfg.alphas, queries=queries, quantize=cfg.quantize, seed=cfg.seed)
    scale = m.conventions.scale
    samples = _data(data, scale, data_root, limit)
    rows = run_square(m.ort(), samples, scale, scfg, device=m.device, progress=progress,
                      saver=ImageSaver.for_run(out, save_images))
    note = SQUARE_NOTE + (f"; {fallback}" if fallback else "")
    return write_report(
        out, command="attack", model=model_info(m), data=data_info(data, samples),
        config={**asdict(scfg), "method": "square", "reference": "clean-sr", "runtime": "onnxruntime",
                "device": str(m.device), "note": note},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=cfg.quantize, reference="clean-sr"),
                     "square": "loss = MSE(f(X), f(X0)); X0 + alpha * stripes, then one +-alpha "
                               "square window per query, kept where the loss grows"},
        results=rows,
        sections={"blackbox": {"method": "square", "queries": scfg.queries, "p_init": scfg.p_init,
                               "weaker_than_gradient_attack": True, "note": note}},
    )


def _defended_attack(model: Any, data: str | Path, defense: Sequence[str] | str, cfg: BasicConfig,
                     out: Path | None, save_images: bool, data_root: Path | None, limit: int | None, device: str,
                     progress: Progress | None, conventions: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rows 'basic' (no defense), 'basic+D' (the bare attack's examples through D: the paper's
    setting) and 'basic+D-adaptive' (attack through D)."""
    names = parse_defenses(defense)
    m, scale, samples = _open_run(model, data, device, conventions, data_root, limit)
    rows = run_defended_attack(m.torch(), samples, scale, cfg, names, device=m.device, progress=progress,
                               saver=ImageSaver.for_run(out, save_images))
    ref = cfg.reference_for(samples)
    return write_report(
        out, command="attack", model=model_info(m, m.check_parity()), data=data_info(data, samples),
        config={**asdict(cfg), "reference": ref, "defenses": list(names), "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=cfg.quantize, reference=ref),
                     "psnr_sr": "through the row's defense: SR of attacked LR vs SR of clean LR",
                     "psnr_sr_vs_bare": "SR of attacked LR through the defense vs the bare model's clean SR"},
        results=rows,
        sections={"defense": {"defenses": list(names), "non_adaptive": "basic+D: attack the bare model, "
                              "evaluate through D", "adaptive": "basic+D-adaptive: attack through D"},
                  "evidence": rows_evidence([r for r in rows if r.get("loss_curve")])},
    )


# ----------------------------------------------------------------------------- the rest of the paper


@claims_out_dir
def universal(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    crop: int | None = None, holdout: float | None = None, reference: str = "auto", quantize: bool = True,
    out: Path | None = None, save_images: bool = False, batch: int | None = None, loss: str = "paper",
    data_root: Path | None = None, limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: Mapping[str, Any] | None = None,
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval universal`: one perturbation per budget for all images (centre crops), saved as
    .npy and amplified PNG; LR/SR PSNR per image, on fit and held-out images. `loss` 'paper'
    is eq. 6 (mean of the images' L2 norms), 'official' the official code's mean of MSEs."""
    loop = _loop(loop)
    cfg = UniversalConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=steps, crop=crop, holdout=holdout,
                          reference=reference, quantize=quantize, seed=seed, batch=batch, loss=loss,
                          **loop.fields(ensemble=False))
    torch.manual_seed(seed)
    m, scale, samples = _open_run(model, data, device, conventions, data_root, limit)
    res = run_universal(m.torch(), samples, scale, cfg, device=m.device, progress=progress,
                        saver=ImageSaver.for_run(out, save_images))
    files = []
    for a, delta in res.perturbations.items():
        stem = f"perturbation_a{a * 255:g}"
        buf = io.BytesIO()
        np.save(buf, delta)
        _extra_file(out, f"{stem}.npy", buf.getvalue())
        if out is not None:
            write_image(Path(out) / f"{stem}.png", amplified(delta, a))
        files.append({"alpha": a, "npy": f"{stem}.npy", "png": f"{stem}.png",
                      "linf": float(np.abs(delta).max()), "mean_abs": float(np.abs(delta).mean())})
    return write_report(
        out, command="universal", model=model_info(m, m.check_parity()), data=data_info(data, samples),
        config={**asdict(cfg), "crop": res.crop, "reference": res.reference, "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference=res.reference),
                     "crop": f"central {res.crop}x{res.crop} LR crop of every image, HR crop above it",
                     "perturbation": "HxWx3 float32 in [-alpha, alpha]; PNG shows delta/(2 alpha)+0.5",
                     "group": "fit: used to fit the perturbation; holdout: never seen while fitting"},
        results=res.rows,
        sections={"universal": {"crop": res.crop, "fit": res.fit, "holdout": res.holdout,
                                "perturbations": files},
                  "evidence": rows_evidence([r for r in res.rows if r.get("group") == "fit"])},
    )


@claims_out_dir
def partial(
    model: Any, data: str | Path = "default", *, alpha: str | Sequence[float] = PAPER_ALPHAS, steps: int = 50,
    reference: str = "auto", quantize: bool = True, out: Path | None = None, save_images: bool = False,
    batch: int | None = None, data_root: Path | None = None, limit: int | None = None, device: str = "auto",
    seed: int = 0, progress: Progress | None = None, conventions: Mapping[str, Any] | None = None,
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval partial`: attack the central half of each LR, measure outside its HR
    counterpart, and the decay of the damage with distance (section 'permeation')."""
    loop = _loop(loop)
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    torch.manual_seed(seed)
    m, scale, samples = _open_run(model, data, device, conventions, data_root, limit)
    res = run_partial(m.torch(), samples, scale, cfg, device=m.device, progress=progress,
                      saver=ImageSaver.for_run(out, save_images))
    return write_report(
        out, command="partial", model=model_info(m, m.check_parity()), data=data_info(data, samples),
        config={**asdict(cfg), "reference": res.reference, "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference=res.reference),
                     "mask": "LR pixels with w/4 <= x < 3w/4 and h/4 <= y < 3h/4 (eq. 10)",
                     "psnr_sr": "SR of attacked vs clean LR, only OUTSIDE the HR mask (shaved)",
                     "psnr_sr_inside": "the same, only inside the HR mask",
                     "permeation": "mean squared error of Y (0..255) per ring of HR pixels at "
                                   "Chebyshev distance d LR pixels from the HR mask (shaved border excluded)"},
        results=res.rows,
        sections={"permeation": [{"alpha": a, **p} for a, p in res.permeation.items()],
                  "evidence": rows_evidence(res.rows)},
    )


@claims_out_dir
def targeted(
    model: Any, *, source: str | Path | None = None, target: str | Path | None = None,
    alpha: str | Sequence[float] = "16/255", steps: int = 50, quantize: bool = True, out: Path | None = None,
    save_images: bool = False, device: str = "auto", seed: int = 0, progress: Progress | None = None,
    conventions: Mapping[str, Any] | None = None, loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval targeted`: push f(X) towards a target HR image (eq. 11), from the source HR
    frame's MATLAB-bicubic LR. Default pair: the two foreman frames of the shared assets."""
    source = source if source is not None else foreman_frames()[0]
    target = target if target is not None else foreman_frames()[1]
    loop = _loop(loop)
    cfg = TargetedConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps), quantize=quantize,
                         seed=seed, **loop.fields(ensemble=False))
    require_file("source", source)
    require_file("target", target)
    torch.manual_seed(seed)
    m = _open(model, device, conventions)
    scale = m.conventions.scale
    pair = load_pair(source, target, scale)
    res = run_targeted(m.torch(), pair, scale, cfg, device=m.device, progress=progress,
                       saver=ImageSaver.for_run(out, save_images))
    return write_report(
        out, command="targeted", model=model_info(m, m.check_parity()),
        data={"source": str(source), "target": str(target), "hr_size": list(pair.source.hr.shape[:2])},
        config={**asdict(cfg), "device": str(m.device), "seed": seed},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference="target HR"),
                     "psnr_target_hr": "SR of attacked LR vs the target HR",
                     "psnr_source_hr": "SR of attacked LR vs the source's own HR (= psnr_hr)",
                     "psnr_lr_target": "attacked LR vs the target's LR (MATLAB bicubic)"},
        results=res.rows,
        sections={"targeted": {"source": pair.source.name, "target": pair.target.name, "clean": res.clean},
                  "evidence": rows_evidence(res.rows, descend=True)},
    )


@claims_out_dir
def transfer(
    models: Sequence[Any], data: str | Path = "default", *, alpha: str | Sequence[float] = "8/255", steps: int = 50,
    reference: str = "auto", quantize: bool = True, out: Path | None = None, batch: int | None = None,
    data_root: Path | None = None, limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: Mapping[str, Any] | None = None,
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval transfer`: basic-attack examples of each source model fed to each target model;
    SR PSNR matrix (rows = source, columns = target) as transfer_matrix.csv and in report.json.
    `loop.method` 'mifgsm' is the momentum attack made for transfer."""
    loop = _loop(loop)
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    if len(models) < 2:
        raise ConfigError(f"transfer needs at least two models, got {len(models)}")
    torch.manual_seed(seed)
    opened = [_open(s, device, conventions) for s in models]
    names = unique_names([m.describe()["name"] for m in opened])
    scale = common_scale({n: m.conventions.scale for n, m in zip(names, opened)})
    samples = _data(data, scale, data_root, limit)
    res = run_transfer({n: m.torch() for n, m in zip(names, opened)}, samples, scale, cfg,
                       device=opened[0].device, progress=progress)
    _extra_file(out, "transfer_matrix.csv", matrix_csv(names, res.matrix))
    return write_report(
        out, command="transfer",
        model={"name": ", ".join(names), "scale": scale,
               "models": [model_info(m, m.check_parity()) for m in opened]},
        data=data_info(data, samples),
        config={**asdict(cfg), "reference": res.reference, "device": str(opened[0].device)},
        environment=environment(str(opened[0].device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference=res.reference),
                     "psnr_sr": "target model: SR of the source's adversarial LR vs SR of the clean LR"},
        results=res.rows,
        sections={"transfer": {"models": names, "rows": "source", "columns": "target", "metric": "psnr_sr",
                               "matrix": [{"alpha": a, "psnr_sr": m} for a, m in res.matrix.items()],
                               "csv": "transfer_matrix.csv"}},
    )


@claims_out_dir
def index(
    model: Any, data: str | Path = "default", *, alpha: str | float = "1/255", samples: int = 1024,
    batch: int | None = 64, steps: int = 50, reference: str = "auto", quantize: bool = True,
    attack_report: Path | None = None, out: Path | None = None, data_root: Path | None = None,
    limit: int | None = None, device: str = "auto", seed: int = 0, progress: Progress | None = None,
    conventions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`sreval index`: the robustness index per image (sec. 5.2) and its Pearson/Spearman
    correlation with the basic attack's SR PSNR (run here, or read from `attack_report`)."""
    alphas = parse_alpha(alpha)
    if len(alphas) != 1:
        raise ConfigError(f"index takes one budget, got {len(alphas)}")
    icfg = IndexConfig(alpha=alphas[0], samples=samples, batch=batch, seed=seed)
    bcfg = BasicConfig(alphas=(icfg.alpha,), steps=check_steps(steps), reference=reference,
                       quantize=quantize, seed=seed)
    previous = read_report(attack_report) if attack_report is not None else None
    torch.manual_seed(seed)
    m = _open(model, device, conventions)
    data_samples = _data(data, m.conventions.scale, data_root, limit)
    rows = run_index(m.torch(), data_samples, icfg, device=m.device, progress=progress)
    names = [s.name for s in data_samples]
    if previous is not None:
        basic_rows, psnr_from = [], str(attack_report)
        psnr_sr = basic_psnr_from_report(previous, icfg.alpha, names, m.sha256)
    else:
        basic_rows = run_basic(m.torch(), data_samples, m.conventions.scale, bcfg, device=m.device,
                               progress=progress)
        psnr_from = f"basic attack run here (steps {bcfg.steps}, reference {bcfg.reference_for(data_samples)})"
        psnr_sr = {r["image"]: r["psnr_sr"] for r in basic_rows}
    for r in rows:
        r["psnr_sr_basic"] = psnr_sr[r["image"]]
    corr = correlation(rows, psnr_sr)
    return write_report(
        out, command="index", model=model_info(m, m.check_parity()), data=data_info(data, data_samples),
        config={**asdict(icfg), "steps": bcfg.steps, "reference": bcfg.reference,
                "attack_report": str(attack_report) if attack_report else None, "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(m.conventions.scale, quantize_lr=quantize),
                     "robustness_index": "max over N_s uniform perturbations Delta_i in [-alpha, alpha] "
                                         "of || grad_X ||f(X) - f(X0)||_2 ||_1 at X = clip01(X0 + Delta_i)"},
        results=rows + basic_rows,
        sections={"robustness_index": {"alpha": icfg.alpha, "samples": icfg.samples, **corr,
                                       "psnr_sr_from": psnr_from}},
    )


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
    steps: int = 50, reference: str = "auto", quantize: bool = True, out: Path | None = None,
    save_images: bool = False, data_root: Path | None = None, limit: int | None = None, device: str = "auto",
    seed: int = 0, progress: Progress | None = None, conventions: Mapping[str, Any] | None = None,
    loop: LoopOptions | None = None, options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`sreval run NAME`: the registered attack object `ATTACKS[name].attack` on every image at
    every budget, one row per (image, budget) with LR / SR PSNR (and against HR). `options` go
    to the attack object's constructor. This is how an attack added to the registry with only
    its class runs from the CLI and in sweeps."""
    entry = _entry(name)
    if entry.cli != "run" or entry.attack is None:
        raise ConfigError(f"attack {name!r} has its own command: sreval {entry.cli}")
    loop = _loop(loop)
    alphas = parse_alpha(alpha, loop.norm)
    takes = {f.name for f in fields(entry.attack)} - {"model", "eps"}
    unknown = sorted(set(options or {}) - takes)
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(unknown)} (it takes {', '.join(sorted(takes))})")
    make = functools.partial(entry.attack, eps=alphas, steps=check_steps(steps), reference=reference,
                             quantize=quantize, quantize_aware=loop.quantize_aware, norm=loop.norm,
                             restarts=loop.restarts, seed=seed, **dict(options or {}))
    torch.manual_seed(seed)
    m = _open(model, device, conventions)
    net, scale = m.torch(), m.conventions.scale
    make(net)  # validates the options before the data is read
    samples = _data(data, scale, data_root, limit)
    saver = ImageSaver.for_run(out, save_images)
    rows: list[Row] = []
    for i, s in enumerate(samples):
        x0 = to_tensor(s.lr, m.device)
        hr = to_tensor(s.hr, m.device) if s.hr is not None else None
        xs, trace = make(net).run(x0, hr, ids=[i])
        sr0 = super_resolve(net, x0)
        for a, (x, ev) in enumerate(zip(xs, trace.rows())):
            sr = super_resolve(net, x[None])
            rows.append({"image": s.name, "attack": name, "alpha": alphas[a], **measure(x0, x[None], sr0, sr, scale),
                         **ev, **measure_hr(sr, s.hr, scale)})
            saver(f"{s.name}_a{alphas[a] * 255:g}", lr=x, sr=sr)
        if progress:
            progress(i + 1, len(samples))
    return write_report(
        out, command=name, model=model_info(m, m.check_parity()), data=data_info(data, samples),
        config={"attack": name, "alphas": alphas, "steps": steps, "reference": reference, "quantize": quantize,
                "seed": seed, **loop.fields(ensemble=False), "options": dict(options or {}),
                "device": str(m.device)},
        environment=environment(str(m.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference=reference),
                     "attack": entry.what},
        results=rows, sections={"evidence": rows_evidence(rows, descend=entry.descend)},
    )


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class AttackEntry:
    """One entry of the attack registry.

    `what` names it in tables and the report; `cli` is the command that runs it; `run(cfg,
    cell, common)` runs it as a sweep cell (`cfg` the sweep's configuration, `cell` the cell,
    `common` the keyword arguments every cell gets: out, device, seed, progress, data_root,
    limit) and returns its report; `key(cfg)` is the part of the sweep configuration its
    numbers depend on (it goes into the cell's cache key). `attack` is its attack object, if
    it has one: an entry with only an attack object runs through `run_attack`."""

    what: str
    cli: str = "run"
    run: Callable[[Any, Any, dict[str, Any]], dict[str, Any]] | None = None
    key: Callable[[Any], dict[str, Any]] | None = None
    attack: type[GradientAttack] | None = None
    descend: bool = False  # its loss goes down (a targeted attack), for the evidence checks
    per_model: bool = True  # one cell per model (transfer: one cell for all models)
    dataset: bool = True  # runs over the sweep's datasets (targeted: over its own image pair)

    def cell_runner(self, name: str) -> Callable[[Any, Any, dict[str, Any]], dict[str, Any]]:
        if self.run is not None:
            return self.run
        return lambda cfg, cell, common: run_attack(name, cell.models[0].spec, cell.data,
                                                    **_gradient_args(cfg, name), **common)

    def cell_key(self, cfg: Any, name: str) -> dict[str, Any]:
        return self.key(cfg) if self.key is not None else _attack_key(cfg, name)


def _gradient_args(cfg: Any, attack: str) -> dict[str, Any]:
    return dict(alpha=list(cfg.alphas), steps=cfg.steps, reference=cfg.reference, quantize=cfg.quantize,
                loop=cfg.loop(attack))


def _attack_key(cfg: Any, attack: str) -> dict[str, Any]:
    return {"alphas": list(cfg.alphas), "steps": cfg.steps, "reference": cfg.reference, "quantize": cfg.quantize,
            "seed": cfg.seed, "batch": cfg.batch, "method": cfg.method_for(attack), "norm": cfg.norm}


def _saving(cfg: Any) -> bool:
    return cfg.keep_images > 0


ATTACKS: dict[str, AttackEntry] = {
    "clean": AttackEntry(
        "clean SR quality against HR", cli="evaluate",
        run=lambda cfg, cell, common: evaluate(cell.models[0].spec, cell.data, save_images=False, **common),
        key=lambda cfg: {"seed": cfg.seed}),
    "basic": AttackEntry(
        "basic attack, I-FGSM", cli="attack", attack=IFGSM,
        run=lambda cfg, cell, common: attack(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                             batch=cfg.batch, method=cfg.method_for("basic"),
                                             **_gradient_args(cfg, "basic"), **common)),
    "universal": AttackEntry(
        "universal perturbation", cli="universal", attack=Universal,
        run=lambda cfg, cell, common: universal(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                                batch=cfg.batch, **_gradient_args(cfg, "universal"), **common)),
    "partial": AttackEntry(
        "partial attack on the central half", cli="partial", attack=PartialIFGSM,
        run=lambda cfg, cell, common: partial(cell.models[0].spec, cell.data, save_images=_saving(cfg),
                                              batch=cfg.batch, **_gradient_args(cfg, "partial"), **common)),
    "targeted": AttackEntry(
        "targeted attack on the foreman pair", cli="targeted", attack=TargetedIFGSM, descend=True, dataset=False,
        run=lambda cfg, cell, common: targeted(
            cell.models[0].spec, source=cell.data.split("|")[0], target=cell.data.split("|")[1],
            alpha=list(cfg.alphas), steps=cfg.steps, quantize=cfg.quantize, save_images=_saving(cfg),
            loop=cfg.loop("targeted"), **{k: v for k, v in common.items() if k not in ("data_root", "limit")}),
        key=lambda cfg: {k: v for k, v in _attack_key(cfg, "targeted").items() if k != "reference"}),
    "transfer": AttackEntry(
        "transferability between all models", cli="transfer", per_model=False,
        run=lambda cfg, cell, common: transfer([m.spec for m in cell.models], cell.data, batch=cfg.batch,
                                               **_gradient_args(cfg, "transfer"), **common)),
    "index": AttackEntry(
        "robustness index at the smallest budget", cli="index",
        run=lambda cfg, cell, common: index(cell.models[0].spec, cell.data, alpha=min(cfg.alphas),
                                            samples=cfg.index_samples, steps=cfg.steps, reference=cfg.reference,
                                            quantize=cfg.quantize, **common),
        key=lambda cfg: {**_attack_key(cfg, "index"), "alphas": [min(cfg.alphas)], "samples": cfg.index_samples}),
    "defense": AttackEntry(
        "basic attack against the defenses", cli="attack --defense",
        run=lambda cfg, cell, common: attack(cell.models[0].spec, cell.data, defense=list(cfg.defenses),
                                             save_images=False, batch=cfg.batch, method=cfg.method_for("defense"),
                                             **_gradient_args(cfg, "defense"), **common),
        key=lambda cfg: {**_attack_key(cfg, "defense"), "defenses": list(cfg.defenses)}),
    # attack objects with no command of their own: `sreval run NAME`, and `--attacks NAME` in sweeps
    "pgd": AttackEntry("PGD with random restarts (Madry et al.)", attack=PGD),
    "apgd": AttackEntry("APGD, adaptive step size (Croce & Hein)", attack=APGD),
    "mifgsm": AttackEntry("momentum I-FGSM (Dong et al.)", attack=MIFGSM),
}


def _entry(name: str) -> AttackEntry:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}: choose from {', '.join(ATTACKS)}")
    return ATTACKS[name]


__all__ = ["load_model", "inspect", "export", "evaluate", "attack", "universal", "partial", "targeted", "transfer", "index",
           "run_attack", "ATTACKS", "AttackEntry", "PAPER_ALPHAS", "STRONGEST", "rows_evidence"]
