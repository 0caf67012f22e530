"""One library function per CLI command: open the model and the data, run, write the report."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from sreval.attacks.basic import BasicConfig, LoopOptions, run_basic
from sreval.attacks.common import check_steps, parse_alpha
from sreval.attacks.evidence import evidence
from sreval.data import Sample, load_dataset
from sreval.evaluate import ImageSaver, Progress, evaluate_clean
from sreval.files import claim_run_dir
from sreval.model import SRModel, load_model
from sreval.report import environment, metric_conventions, write_report


J = TypeVar("J", bound=Callable[..., dict[str, Any]])


def claims_out_dir(job: J) -> J:
    """A job writes into `out_dir`: check it can (a file in the way, read-only, a name too long,
    no space) BEFORE any work, and hold its lock while the job runs, so two runs never mix."""

    @functools.wraps(job)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with claim_run_dir(Path(kwargs["out_dir"])):
            return job(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def open_model(spec: str | Path, device: str, conventions: dict[str, Any] | None) -> tuple[SRModel, Any]:
    """Open, convert and parity-check a model (by path or zoo name): (model, its parity)."""
    model = load_model(spec, device=device, check=False, **(conventions or {}))
    return model, model.check_parity()


def open_data(spec: str | Path, scale: int, data_root: Path | None, limit: int | None) -> list[Sample]:
    return load_dataset(spec, scale, data_root=data_root, limit=limit)


def data_info(spec: str | Path, samples: list[Sample]) -> dict[str, Any]:
    return {"spec": str(spec), "n_images": len(samples), "images": [s.name for s in samples],
            "has_hr": all(s.hr is not None for s in samples)}


def model_info(model: SRModel, parity: Any = None) -> dict[str, Any]:
    info = model.describe()
    if parity is not None:
        info["parity"] = {"max_diff": parity.max_diff, "tol": parity.tol, "grad_l1": parity.grad_l1}
    return info


@claims_out_dir
def run_attack_job(
    model_spec: str | Path,
    data: str | Path,
    *,
    alpha: str | list[float],
    steps: int = 50,
    reference: str = "auto",
    quantize: bool = True,
    out_dir: Path,
    save_images: bool = False,
    batch: int | None = None,
    data_root: Path | None = None,
    limit: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    conventions: dict[str, Any] | None = None,
    method: str | None = None,
    queries: int = 500,
    precision: str = "fp32",
    loop: LoopOptions | None = None,
    sanity: bool = True,
) -> dict[str, Any]:
    """`sreval attack`: the basic attack over a dataset; writes report.json and results.csv.
    `precision` bf16/fp16 runs the attack's forward/backward in mixed precision; the report
    then states the SR PSNR difference against a float32 attack on the same (first) images.
    `method` 'square' (or 'auto' on a model onnx2torch cannot convert) runs the gradient-free
    Square attack through onnxruntime instead (`sreval.blackbox`); any other `method` is one of
    the shared loop's (ifgsm, pgd, apgd, mifgsm, strongest), whose other options come in `loop`
    (None: `loop.method`).
    `sanity` runs the evidence checks (sreval.attacks.evidence) into the report's `evidence`."""
    from sreval.blackbox import choose_method, run_square_job

    # Validate the cheap options before the expensive model conversion.
    loop = loop or LoopOptions()
    method = method or loop.method  # `method` (the CLI's --method) may also name square / auto
    loop = replace(loop, method=method if method not in ("square", "auto") else "ifgsm")
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, precision=precision,
                      **loop.fields())
    torch.manual_seed(seed)
    model = load_model(model_spec, device=device, check=False, **(conventions or {}))
    chosen, fallback = choose_method(model, method)
    if chosen == "square":
        return run_square_job(model, data, alpha=alpha, queries=queries, quantize=quantize, out_dir=out_dir,
                              save_images=save_images, data_root=data_root, limit=limit, seed=seed,
                              progress=progress, fallback=fallback)
    parity = model.check_parity()
    scale = model.conventions.scale
    samples = open_data(data, scale, data_root, limit)
    ref = cfg.reference_for(samples)
    saver = ImageSaver.for_run(out_dir, save_images)
    rows = run_basic(model.torch(), samples, scale, cfg, device=model.device, progress=progress, saver=saver)
    sections: dict[str, Any] = {"evidence": evidence(model.torch(), samples, scale, cfg, rows, model.device,
                                                     run_probes=sanity)}
    if precision != "fp32":
        sections["precision_check"] = precision_check(model, samples[:2], scale, cfg, rows)
    return write_report(
        Path(out_dir), command="attack", model=model_info(model, parity), data=data_info(data, samples),
        config={**asdict(cfg), "reference": ref, "device": str(model.device)},
        environment=environment(str(model.device)),
        conventions=metric_conventions(scale, quantize_lr=quantize, reference=ref),
        results=rows, sections=sections,
    )


def rows_evidence(rows: list[dict[str, Any]], *, descend: bool = False) -> dict[str, Any]:
    """The evidence checks an attack's own rows allow (the probes are the basic attack's)."""
    return evidence(None, [], 0, None, rows, None, run_probes=False, descend=descend)


def precision_check(model: SRModel, samples: list[Sample], scale: int, cfg: BasicConfig,
                    rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-attack the first images in float32: what mixed precision changes in SR PSNR."""
    ref_rows = run_basic(model.torch(), samples, scale, replace(cfg, precision="fp32"), device=model.device)
    mixed = {(r["image"], r["alpha"]): r["psnr_sr"] for r in rows}
    diffs = [{"image": r["image"], "alpha": r["alpha"], "psnr_sr_fp32": r["psnr_sr"],
              f"psnr_sr_{cfg.precision}": mixed[(r["image"], r["alpha"])],
              "difference": mixed[(r["image"], r["alpha"])] - r["psnr_sr"]} for r in ref_rows]
    finite = [abs(d["difference"]) for d in diffs if math.isfinite(d["difference"])]
    return {"precision": cfg.precision, "images": [s.name for s in samples], "rows": diffs,
            "mean_abs_difference_db": sum(finite) / len(finite) if finite else None}


@claims_out_dir
def run_evaluate_job(
    model_spec: str | Path,
    data: str | Path,
    *,
    out_dir: Path,
    save_images: bool = False,
    data_root: Path | None = None,
    limit: int | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    conventions: dict[str, Any] | None = None,
    runtime: str = "auto",
) -> dict[str, Any]:
    """`sreval evaluate`: clean SR PSNR/SSIM against HR, in the report schema (attack 'none').
    `runtime` 'auto' uses the PyTorch conversion, or onnxruntime where onnx2torch cannot convert
    the model; 'onnxruntime' skips the conversion; the report says which ran."""
    torch.manual_seed(seed)
    model = load_model(model_spec, device=device, check=False, **(conventions or {}))
    module, runtime = model.runtime(runtime)
    parity = model.check_parity() if runtime == "torch" else None
    scale = model.conventions.scale
    samples = open_data(data, scale, data_root, limit)
    saver = ImageSaver.for_run(out_dir, save_images)
    rows = evaluate_clean(module, samples, scale, device=model.device, progress=progress, saver=saver)
    return write_report(
        Path(out_dir), command="evaluate", model=model_info(model, parity), data=data_info(data, samples),
        config={"device": str(model.device), "seed": seed, "runtime": runtime},
        environment=environment(str(model.device)),
        conventions=metric_conventions(scale), results=rows,
    )


def inspect_model(model_spec: str | Path, *, device: str = "auto",
                  conventions: dict[str, Any] | None = None) -> dict[str, Any]:
    """`sreval inspect`: what sreval makes of a model file, without running an attack."""
    from sreval.convert import unsupported_ops
    from sreval.model import SRModel, resolve_model_path

    model = SRModel(resolve_model_path(model_spec), device=device,
                    **{k: v for k, v in (conventions or {}).items() if v is not None})
    info: dict[str, Any] = {
        "path": str(model.path), "sha256": model.sha256, "opset": model.opset,
        "input": f"{model.input.name} {['?' if d is None else d for d in model.input_dims]}",
        "scale": model.conventions.scale, "conventions": model.conventions.as_dict(),
        "sources": ", ".join(f"{k}: {v}" for k, v in model.sources.items()),
    }
    from sreval.detect import propose
    from sreval.errors import SrevalError
    from sreval.model import ConversionError

    try:
        info["detected"] = propose(model).summary() or "nothing to detect"
    except SrevalError as e:
        info["detected"] = f"unavailable: {e}"
    missing = unsupported_ops(model.proto)
    info["unsupported_ops"] = missing
    try:
        p = None if missing else model.check_parity(raise_on_fail=False)
    except ConversionError as e:
        p, info["conversion"] = None, f"FAILED: {e}"
    if p is not None:
        info["parity"] = (f"{'ok' if p.ok else 'FAILED'}: max |torch - onnxruntime| = {p.max_diff:.3g} "
                          f"(tol {p.tol:g}), input-gradient L1 = {p.grad_l1:.3g}")
    else:
        info["runtime"] = ("onnxruntime only: `evaluate` works, `attack --method square` runs a "
                           "gradient-free attack (weaker than I-FGSM)")
    return info


# ----------------------------------------------------------------------------- the rest of the paper
# (universal, partial, targeted attacks; transferability; robustness index; defenses)


def _open_run(model_spec: str | Path, data: str | Path, device: str, seed: int,
              conventions: dict[str, Any] | None, data_root: Path | None,
              limit: int | None) -> tuple[SRModel, Any, int, list[Sample]]:
    torch.manual_seed(seed)
    model, parity = open_model(model_spec, device, conventions)
    scale = model.conventions.scale
    return model, parity, scale, open_data(data, scale, data_root, limit)


@claims_out_dir
def run_universal_job(
    model_spec: str | Path, data: str | Path, *, alpha: str | list[float], steps: int = 50,
    crop: int | None = None, holdout: float | None = None, reference: str = "auto",
    quantize: bool = True, out_dir: Path, save_images: bool = False, batch: int | None = None,
    data_root: Path | None = None, limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: dict[str, Any] | None = None,
    loop: LoopOptions | None = None, loss: str = "paper",
) -> dict[str, Any]:
    """`sreval universal`: one perturbation per budget for all images (centre crops), saved as
    .npy and amplified PNG; LR/SR PSNR per image, on fit and held-out images. `loss` 'paper'
    is eq. 6 (mean of the images' L2 norms), 'official' the official code's mean of MSEs."""
    import io as _io

    import numpy as np

    from sreval.attacks.universal import UniversalConfig, amplified, run_universal
    from sreval.io import write_image
    from sreval.files import atomic_write

    loop = loop or LoopOptions()
    cfg = UniversalConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=steps, crop=crop, holdout=holdout,
                          reference=reference, quantize=quantize, seed=seed, batch=batch, loss=loss,
                          **loop.fields(ensemble=False))
    model, parity, scale, samples = _open_run(model_spec, data, device, seed, conventions, data_root, limit)
    res = run_universal(model.torch(), samples, scale, cfg, device=model.device, progress=progress,
                        saver=ImageSaver.for_run(out_dir, save_images))
    files = []
    for a, delta in res.perturbations.items():
        stem = f"perturbation_a{a * 255:g}"
        buf = _io.BytesIO()
        np.save(buf, delta)
        atomic_write(Path(out_dir) / f"{stem}.npy", buf.getvalue())
        write_image(Path(out_dir) / f"{stem}.png", amplified(delta, a))
        files.append({"alpha": a, "npy": f"{stem}.npy", "png": f"{stem}.png",
                      "linf": float(np.abs(delta).max()), "mean_abs": float(np.abs(delta).mean())})
    return write_report(
        Path(out_dir), command="universal", model=model_info(model, parity), data=data_info(data, samples),
        config={**asdict(cfg), "crop": res.crop, "reference": res.reference, "device": str(model.device)},
        environment=environment(str(model.device)),
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
def run_partial_job(
    model_spec: str | Path, data: str | Path, *, alpha: str | list[float], steps: int = 50,
    reference: str = "auto", quantize: bool = True, out_dir: Path, save_images: bool = False,
    batch: int | None = None, data_root: Path | None = None, limit: int | None = None,
    device: str = "auto", seed: int = 0, progress: Progress | None = None,
    conventions: dict[str, Any] | None = None, loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval partial`: attack the central half of each LR, measure outside its HR
    counterpart, and the decay of the damage with distance (section 'permeation')."""
    from sreval.attacks.partial import run_partial

    loop = loop or LoopOptions()
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    model, parity, scale, samples = _open_run(model_spec, data, device, seed, conventions, data_root, limit)
    res = run_partial(model.torch(), samples, scale, cfg, device=model.device, progress=progress,
                      saver=ImageSaver.for_run(out_dir, save_images))
    return write_report(
        Path(out_dir), command="partial", model=model_info(model, parity), data=data_info(data, samples),
        config={**asdict(cfg), "reference": res.reference, "device": str(model.device)},
        environment=environment(str(model.device)),
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
def run_targeted_job(
    model_spec: str | Path, *, source: str | Path | None = None, target: str | Path | None = None,
    alpha: str | list[float] = "16/255", steps: int = 50, quantize: bool = True, out_dir: Path,
    save_images: bool = False, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: dict[str, Any] | None = None,
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval targeted`: push f(X) towards a target HR image (eq. 11), from the source HR
    frame's MATLAB-bicubic LR. Default pair: the two foreman frames of the shared assets."""
    from sreval.attacks.targeted import TargetedConfig, foreman_frames, load_pair, require_file, run_targeted

    source = source if source is not None else foreman_frames()[0]
    target = target if target is not None else foreman_frames()[1]
    loop = loop or LoopOptions()
    cfg = TargetedConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps), quantize=quantize,
                         seed=seed, **loop.fields(ensemble=False))
    require_file("source", source)
    require_file("target", target)
    torch.manual_seed(seed)
    model, parity = open_model(model_spec, device, conventions)
    scale = model.conventions.scale
    pair = load_pair(source, target, scale)
    res = run_targeted(model.torch(), pair, scale, cfg, device=model.device, progress=progress,
                       saver=ImageSaver.for_run(out_dir, save_images))
    return write_report(
        Path(out_dir), command="targeted", model=model_info(model, parity),
        data={"source": str(source), "target": str(target), "hr_size": list(pair.source.hr.shape[:2])},
        config={**asdict(cfg), "device": str(model.device), "seed": seed},
        environment=environment(str(model.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference="target HR"),
                     "psnr_target_hr": "SR of attacked LR vs the target HR",
                     "psnr_source_hr": "SR of attacked LR vs the source's own HR (= psnr_hr)",
                     "psnr_lr_target": "attacked LR vs the target's LR (MATLAB bicubic)"},
        results=res.rows,
        sections={"targeted": {"source": pair.source.name, "target": pair.target.name, "clean": res.clean},
                  "evidence": rows_evidence(res.rows, descend=True)},
    )


@claims_out_dir
def run_transfer_job(
    model_specs: list[str | Path], data: str | Path, *, alpha: str | list[float] = "8/255",
    steps: int = 50, reference: str = "auto", quantize: bool = True, out_dir: Path,
    batch: int | None = None, data_root: Path | None = None, limit: int | None = None,
    device: str = "auto", seed: int = 0, progress: Progress | None = None,
    conventions: dict[str, Any] | None = None, loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval transfer`: basic-attack examples of each source model fed to each target model;
    SR PSNR matrix (rows = source, columns = target) as transfer_matrix.csv and in report.json.
    `loop.method` 'mifgsm' is the momentum attack made for transfer."""
    from sreval.analysis import common_scale, matrix_csv, run_transfer, unique_names
    from sreval.errors import ConfigError
    from sreval.files import atomic_write

    loop = loop or LoopOptions()
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    if len(model_specs) < 2:
        raise ConfigError(f"transfer needs at least two models, got {len(model_specs)}")
    torch.manual_seed(seed)
    opened, parities = zip(*(open_model(m, device, conventions) for m in model_specs))
    names = unique_names([m.describe()["name"] for m in opened])
    scale = common_scale({n: m.conventions.scale for n, m in zip(names, opened)})
    samples = open_data(data, scale, data_root, limit)
    res = run_transfer({n: m.torch() for n, m in zip(names, opened)}, samples, scale, cfg,
                       device=opened[0].device, progress=progress)
    atomic_write(Path(out_dir) / "transfer_matrix.csv", matrix_csv(names, res.matrix))
    return write_report(
        Path(out_dir), command="transfer",
        model={"name": ", ".join(names), "scale": scale, "models": [model_info(m, p) for m, p in zip(opened, parities)]},
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
def run_index_job(
    model_spec: str | Path, data: str | Path, *, alpha: str | float = "1/255", samples: int = 1024,
    batch: int | None = 64, steps: int = 50, reference: str = "auto", quantize: bool = True,
    attack_report: Path | None = None, out_dir: Path, data_root: Path | None = None,
    limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`sreval index`: the robustness index per image (sec. 5.2) and its Pearson/Spearman
    correlation with the basic attack's SR PSNR (run here, or read from --attack-report)."""
    from sreval.analysis import IndexConfig, basic_psnr_from_report, correlation, run_index
    from sreval.errors import ConfigError
    from sreval.report import read_report

    alphas = parse_alpha(alpha)
    if len(alphas) != 1:
        raise ConfigError(f"index takes one budget, got {len(alphas)}")
    icfg = IndexConfig(alpha=alphas[0], samples=samples, batch=batch, seed=seed)
    bcfg = BasicConfig(alphas=(icfg.alpha,), steps=check_steps(steps), reference=reference,
                       quantize=quantize, seed=seed)
    previous = read_report(attack_report) if attack_report is not None else None
    model, parity, scale, data_samples = _open_run(model_spec, data, device, seed, conventions, data_root, limit)
    rows = run_index(model.torch(), data_samples, icfg, device=model.device, progress=progress)
    names = [s.name for s in data_samples]
    if previous is not None:
        basic_rows, psnr_from = [], str(attack_report)
        psnr_sr = basic_psnr_from_report(previous, icfg.alpha, names, model.sha256)
    else:
        basic_rows = run_basic(model.torch(), data_samples, scale, bcfg, device=model.device, progress=progress)
        psnr_from = f"basic attack run here (steps {bcfg.steps}, reference {bcfg.reference_for(data_samples)})"
        psnr_sr = {r["image"]: r["psnr_sr"] for r in basic_rows}
    for r in rows:
        r["psnr_sr_basic"] = psnr_sr[r["image"]]
    corr = correlation(rows, psnr_sr)
    return write_report(
        Path(out_dir), command="index", model=model_info(model, parity), data=data_info(data, data_samples),
        config={**asdict(icfg), "steps": bcfg.steps, "reference": bcfg.reference,
                "attack_report": str(attack_report) if attack_report else None, "device": str(model.device)},
        environment=environment(str(model.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize),
                     "robustness_index": "max over N_s uniform perturbations Delta_i in [-alpha, alpha] "
                                         "of || grad_X ||f(X) - f(X0)||_2 ||_1 at X = clip01(X0 + Delta_i)"},
        results=rows + basic_rows,
        sections={"robustness_index": {"alpha": icfg.alpha, "samples": icfg.samples, **corr,
                                       "psnr_sr_from": psnr_from}},
    )


@claims_out_dir
def run_defended_attack_job(
    model_spec: str | Path, data: str | Path, *, defenses: list[str] | str, alpha: str | list[float],
    steps: int = 50, reference: str = "auto", quantize: bool = True, out_dir: Path,
    save_images: bool = False, batch: int | None = None, data_root: Path | None = None,
    limit: int | None = None, device: str = "auto", seed: int = 0,
    progress: Progress | None = None, conventions: dict[str, Any] | None = None,
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """`sreval attack --defense D`: rows 'basic' (no defense), 'basic+D' (the bare attack's
    examples through D: the paper's setting) and 'basic+D-adaptive' (attack through D)."""
    from sreval.defenses import parse_defenses, run_defended_attack

    names = parse_defenses(defenses)
    loop = loop or LoopOptions()
    cfg = BasicConfig(alphas=tuple(parse_alpha(alpha, loop.norm)), steps=check_steps(steps),
                      reference=reference, quantize=quantize, seed=seed, batch=batch, **loop.fields())
    model, parity, scale, samples = _open_run(model_spec, data, device, seed, conventions, data_root, limit)
    rows = run_defended_attack(model.torch(), samples, scale, cfg, names, device=model.device,
                               progress=progress, saver=ImageSaver.for_run(out_dir, save_images))
    ref = cfg.reference_for(samples)
    return write_report(
        Path(out_dir), command="attack", model=model_info(model, parity), data=data_info(data, samples),
        config={**asdict(cfg), "reference": ref, "defenses": list(names), "device": str(model.device)},
        environment=environment(str(model.device)),
        conventions={**metric_conventions(scale, quantize_lr=quantize, reference=ref),
                     "psnr_sr": "through the row's defense: SR of attacked LR vs SR of clean LR",
                     "psnr_sr_vs_bare": "SR of attacked LR through the defense vs the bare model's clean SR"},
        results=rows,
        sections={"defense": {"defenses": list(names), "non_adaptive": "basic+D: attack the bare model, "
                              "evaluate through D", "adaptive": "basic+D-adaptive: attack through D"},
                  "evidence": rows_evidence([r for r in rows if r.get("loss_curve")])},
    )


@claims_out_dir
def run_defended_evaluate_job(
    model_spec: str | Path, data: str | Path, *, defenses: list[str] | str, out_dir: Path,
    save_images: bool = False, data_root: Path | None = None, limit: int | None = None,
    device: str = "auto", seed: int = 0, progress: Progress | None = None,
    conventions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`sreval evaluate --defense D`: clean rows of the bare model ('none') and through each
    defense ('none+D')."""
    from sreval.defenses import evaluate_defended, parse_defenses

    names = parse_defenses(defenses)
    model, parity, scale, samples = _open_run(model_spec, data, device, seed, conventions, data_root, limit)
    rows = evaluate_defended(model.torch(), samples, scale, names, device=model.device,
                             progress=progress, saver=ImageSaver.for_run(out_dir, save_images))
    return write_report(
        Path(out_dir), command="evaluate", model=model_info(model, parity), data=data_info(data, samples),
        config={"device": str(model.device), "seed": seed, "defenses": list(names)},
        environment=environment(str(model.device)), conventions=metric_conventions(scale), results=rows,
        sections={"defense": {"defenses": list(names)}},
    )
