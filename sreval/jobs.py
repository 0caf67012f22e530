"""The one skeleton of every job: open the model, check its conversion, load the data, run,
and write the report (`run_job`); what a job computed (`JobResult`), and where it runs (`Run`).
The job functions of `sreval.commands` are each one `run_job` call with their own computation."""

from __future__ import annotations

import functools

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

import torch

from sreval import zoo
from sreval.attacks.evidence import evidence
from sreval.config import LoopOptions
from sreval.conventions import Overrides
from sreval.data import Sample, load_dataset
from sreval.evaluation import ImageSaver, Progress, Row, measure, measure_hr, super_resolve
from sreval.files import atomic_write
from sreval.model import LoadedModel, SRModel
from sreval.report import Report, data_info, environment, metric_conventions, model_info, write_report


def as_model(model: Any, device: str, conventions: Overrides | Mapping[str, Any] | None,
             check: bool = True) -> SRModel:
    """The SRModel behind a MODEL argument (a path, a zoo name, or a model already opened);
    with `check`, its parity verified."""
    if isinstance(model, LoadedModel):
        return model.source
    opened = model if isinstance(model, SRModel) else zoo.open_model(model, device=device, check=False,
                                                                     overrides=Overrides.of(conventions))
    if check:
        opened.check_parity()
    return opened


def with_method(loop: LoopOptions | None, method: str | None = None) -> LoopOptions:
    """The shared loop's options (default: the paper's I-FGSM), with `method` where given."""
    loop = loop or LoopOptions()
    return replace(loop, method=method) if method else loop


def rows_evidence(rows: list[Row], *, descend: bool = False) -> dict[str, Any]:
    """The evidence checks an attack's own rows allow (the probes are the basic attack's)."""
    return evidence(None, [], 0, None, rows, None, run_probes=False, descend=descend)


# ----------------------------------------------------------------------------- the one job skeleton


@dataclass
class JobResult:
    """What a job computed, as its report says it: rows, the configuration as run, its own
    metric conventions and sections, and files written beside the report."""

    rows: list[Row]
    config: dict[str, Any]
    conventions: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    quantize: bool = True  # the attacked LR was delivered as 8 bits
    reference: str | None = None  # what the attack's loss measured against
    files: dict[str, bytes | str] = field(default_factory=dict)
    data: dict[str, Any] | None = None  # instead of the dataset's description (targeted: the pair)


class JobOptions(TypedDict, total=False):
    """What every job takes besides its own options (`sreval.attack(model, data, ..., **options)`);
    the defaults are `run_job`'s."""

    out: Path | None  # the run folder (None: the report is returned, not written)
    save_images: bool  # LR/SR PNGs under out/images
    data_root: Path | None  # where dataset names resolve
    limit: int | None  # the first N images only
    device: str  # auto, cpu or cuda
    progress: Progress | None  # called with (done, total) as the work advances
    conventions: Overrides | Mapping[str, Any] | None  # what the user fixed of the model's conventions


DEVICE = "auto"  # run_job's default device, for the jobs that open a model before it


@dataclass(frozen=True)
class Run:
    """Where a job runs: the opened models (most jobs: one), the dataset at their scale, the
    run folder."""

    models: list[SRModel]
    samples: list[Sample]
    out: Path | None
    progress: Progress | None = None
    save_images: bool = False

    @property
    def model(self) -> SRModel:
        return self.models[0]

    @property
    def scale(self) -> int:
        return self.model.conventions.scale

    @functools.cached_property
    def saver(self) -> ImageSaver:
        """The run's one image saver (its images are staged until the report lands)."""
        return ImageSaver(self.out, self.save_images)


def run_job(
    kind: str, model: Any, data: str | Path | None, job: Callable[[Run], JobResult], *, seed: int = 0,
    out: Path | None = None, save_images: bool = False, data_root: Path | None = None, limit: int | None = None,
    device: str = DEVICE, progress: Progress | None = None, conventions: Overrides | Mapping[str, Any] | None = None,
    parity: bool = True, command: str | None = None,
) -> Report:
    """Every job's skeleton: seed, open the model (a list: several, of one scale), check its
    conversion (`parity`; False: the job runs onnxruntime), load the data at its scale (`data`
    None: the job reads its own), run, and write the report (and the job's files) into `out`."""
    torch.manual_seed(seed)
    models = [as_model(m, device, conventions, check=False) for m in (model if isinstance(model, list) else [model])]
    for m in models if parity else []:  # before the data: a model converted wrongly costs no data loading
        m.check_parity()
    scale = models[0].conventions.scale
    samples = load_dataset(data, scale, data_root=data_root, limit=limit) if data is not None else []
    run = Run(models, samples, out, progress, save_images)
    try:
        report = write_job_report(out, kind, command or kind, models, data, samples, job(run), parity=parity)
    except BaseException:
        run.saver.discard()
        raise
    run.saver.commit()
    return report


def write_job_report(out: Path | None, kind: str, command: str, models: list[SRModel], data: str | Path | None,
                     samples: list[Sample], done: JobResult, *, parity: bool = True) -> Report:
    """The report of a job's outcome; each model is reported with its parity where the job
    ran the conversion."""
    infos = [model_info(m, m.check_parity() if parity else None) for m in models]
    scale, device = models[0].conventions.scale, str(models[0].device)
    model = infos[0] if len(infos) == 1 else {"name": ", ".join(i["name"] for i in infos), "scale": scale,
                                              "models": infos}
    for name, content in done.files.items():
        if out is not None:
            atomic_write(Path(out) / name, content)
    return write_report(
        out, kind=kind, command=command, model=model,
        data=done.data if done.data is not None else data_info(str(data), samples),
        config={**done.config, "device": device}, environment=environment(device),
        conventions={**metric_conventions(scale, quantize_lr=done.quantize, reference=done.reference),
                     **done.conventions},
        results=done.rows, sections=done.sections,
    )


def measure_rows(net: torch.nn.Module, s: Sample, x0: torch.Tensor, xs: torch.Tensor, trace: Any, attack: str,
                 alphas: Sequence[float], scale: int, saver: ImageSaver) -> list[Row]:
    """One image's rows: each budget's attacked LR (budget-major, as attack objects return
    them) measured against the clean LR and its SR, with the loop's evidence."""
    sr0 = super_resolve(net, x0)
    rows: list[Row] = []
    for a, (x, ev) in enumerate(zip(xs, trace.rows())):
        sr = super_resolve(net, x[None])
        rows.append({"image": s.name, "attack": attack, "alpha": alphas[a], **measure(x0, x[None], sr0, sr, scale),
                     **ev, **measure_hr(sr, s.hr, scale)})
        saver(f"{s.name}_a{alphas[a] * 255:g}", lr=x, sr=sr)
    return rows


__all__ = ["JobResult", "JobOptions", "DEVICE", "Run", "run_job", "write_job_report", "as_model", "with_method", "rows_evidence",
           "measure_rows"]
