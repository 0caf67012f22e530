"""The public API as a user calls it: `import sreval`, a loaded model as an nn.Module, attack
objects with the CLI's defaults, one function per command returning the CLI's report, and
the attack registry read by the CLI, the sweep and the report (every entry tested)."""

from __future__ import annotations

import dataclasses
import html
import inspect as pyinspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

import sreval
from sreval.config import parse_alpha
from sreval.cli import app
from sreval.executors import CELL_RUNS
from sreval.jobs import JobOptions, run_job
from sreval.registry import ATTACKS, AttackEntry
from tests.test_cli import make_dataset
from tests.tiny import TinySR, export

runner = CliRunner()
# CLI command -> the public function it is a thin layer over
COMMANDS = {"evaluate": sreval.evaluate, "attack": sreval.attack, "universal": sreval.universal,
            "partial": sreval.partial, "targeted": sreval.targeted, "transfer": sreval.transfer,
            "index": sreval.index, "sweep": sreval.sweep, "inspect": sreval.inspect, "run": sreval.run_attack}
# CLI parameter names that differ from the library's (typer needs `range_`, and a run folder)
RENAMED = {"out_dir": "out", "range_": None, "scale": None, "color": None, "layout": None,
           "preupsampled": None, "output": None, "restarts": None, "norm": None, "quantize_aware": None,
           "ensemble": None, "option": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("d") / "set", n=2, hw=(28, 24))


def _defaults(fn: Any) -> dict[str, Any]:
    """A function's defaults; the options every job shares (`**run: Unpack[JobOptions]`) have
    run_job's."""
    params = pyinspect.signature(fn).parameters
    shared = {k: v for k, v in _defaults(run_job).items() if k in JobOptions.__annotations__} if any(
        p.kind is p.VAR_KEYWORD for p in params.values()) else {}
    return {**shared, **{k: p.default for k, p in params.items() if p.default is not pyinspect.Parameter.empty}}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_are_the_library_defaults(command: str) -> None:
    """Every option the CLI shares with its public function has the same default, so a
    notebook and the command line give the same numbers."""
    click = get_command(app).commands[command]  # type: ignore[attr-defined]
    lib = _defaults(COMMANDS[command])
    compared = 0
    for param in click.params:
        name = RENAMED.get(param.name, param.name)
        if name is None or name not in lib or param.name == "out_dir":
            continue
        cli_default = param.default
        if name == "alpha":  # budgets as text or numbers: the same budgets
            cli_default, lib_default = parse_alpha(cli_default), parse_alpha(lib[name])
        elif isinstance(lib[name], (list, tuple)) and isinstance(cli_default, str):
            cli_default = tuple(cli_default.split(","))
            lib_default: Any = tuple(lib[name])
        else:
            lib_default = lib[name]
        assert cli_default == lib_default, f"{command} --{param.name}: CLI {cli_default!r}, library {lib_default!r}"
        compared += 1
    assert compared >= 1


class Scaled(torch.nn.Identity):
    scale = 2


@pytest.mark.parametrize(("cls", "command"), [
    (sreval.IFGSM, sreval.attack), (sreval.PGD, sreval.attack), (sreval.APGD, sreval.attack),
    (sreval.MIFGSM, sreval.attack), (sreval.Universal, sreval.universal), (sreval.PartialIFGSM, sreval.partial),
    (sreval.TargetedIFGSM, sreval.targeted)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_attack_objects_share_the_cli_defaults(cls: type, command: Any) -> None:
    """The attack object of each command, built with only a model and a budget, has the
    command's defaults (steps, reference, 8-bit delivery, seed)."""
    lib = _defaults(command)
    obj = cls(Scaled(), eps=8 / 255)
    assert isinstance(obj, sreval.GradientAttack)
    shared = [k for k in ("steps", "reference", "quantize", "seed") if k in lib]
    assert len(shared) >= 3
    assert {k: getattr(obj, k) for k in shared} == {k: lib[k] for k in shared}


def test_load_model_is_a_module_and_attacks_like_the_cli(tiny: Path, data: Path, tmp_path: Path) -> None:
    model = sreval.load_model(tiny, device="cpu")
    assert isinstance(model, torch.nn.Module) and model.scale == 2 and model.parity.ok
    lr = torch.rand(2, 3, 12, 10)
    assert model(lr).shape == (2, 3, 24, 20)
    x_adv = sreval.IFGSM(model, eps=8 / 255, steps=3)(lr)
    assert x_adv.shape == lr.shape and (x_adv - lr).abs().max() <= 8 / 255 + 1e-6
    assert torch.equal(x_adv, torch.round(x_adv * 255) / 255)  # delivered as 8-bit, as the CLI does
    values = sreval.psnr(model(x_adv), model(lr), shave=2)
    assert isinstance(values, list) and len(values) == 2

    # the function returns the report the CLI writes, and writes only when given out=
    report = sreval.attack(model, data, alpha="2/255,8/255", steps=3, device="cpu")
    assert not (tmp_path / "cli").exists()
    r = runner.invoke(app, ["attack", str(tiny), "--data", str(data), "--alpha", "2/255,8/255", "--steps", "3",
                            "--device", "cpu", "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    written = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert [s["psnr_sr"] for s in report["summary"]] == [s["psnr_sr"] for s in written["summary"]]
    by_path = sreval.attack(tiny, data, alpha="2/255,8/255", steps=3, device="cpu", out=tmp_path / "lib")
    assert (tmp_path / "lib" / "report.json").is_file() and (tmp_path / "lib" / "results.csv").is_file()
    assert by_path["summary"] == report["summary"]


def test_every_command_function_returns_a_report(tiny: Path, data: Path) -> None:
    common = dict(device="cpu")
    reports = {
        "evaluate": sreval.evaluate(tiny, data, **common),
        "universal": sreval.universal(tiny, data, alpha="8/255", steps=2, **common),
        "partial": sreval.partial(tiny, data, alpha="8/255", steps=2, **common),
        "transfer": sreval.transfer([tiny, tiny], data, alpha="8/255", steps=2, **common),
        "index": sreval.index(tiny, data, samples=4, steps=2, **common),
    }
    for name, rep in reports.items():
        assert rep["schema"] == "sreval.report/2" and rep["results"], name
    assert sreval.inspect(tiny)["scale"] == 2


def test_registry_entries_are_complete() -> None:
    cli = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name, entry in ATTACKS.items():
        assert isinstance(entry, AttackEntry) and entry.what, name
        assert entry.cli.split()[0] in cli, f"{name}: no CLI command {entry.cli!r}"
        assert name in CELL_RUNS or entry.attack is not None, f"{name}: neither a job nor an attack object"
        if entry.attack is not None:
            cls = entry.attack_class()
            assert issubclass(cls, sreval.GradientAttack) and cls.__name__ == entry.attack_name, name


@pytest.mark.parametrize("name", sorted(n for n, e in ATTACKS.items() if e.dataset))
def test_every_registered_attack_runs_as_a_sweep_cell_and_renders(name: str, tiny: Path, data: Path,
                                                                  tmp_path: Path) -> None:
    """The registry is what the sweep and the report read: each entry runs as a cell and lands
    in the HTML report (a new entry is tested here without a new test)."""
    other = export(TinySR(scale=2, seed=3), tmp_path / "other.onnx")
    models = f"{tiny},{other}" if not ATTACKS[name].per_model else str(tiny)
    r = runner.invoke(app, ["sweep", "--models", models, "--data", str(data), "--attacks", name, "--alpha", "8/255",
                            "--steps", "2", "--index-samples", "4", "--defenses", "resize", "--device", "cpu",
                            "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["results"] and all(c["status"] == "done" for c in report["sweep"]["cells"])
    r = runner.invoke(app, ["report", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert html.escape(ATTACKS[name].what) in (tmp_path / "s" / "report.html").read_text()


@pytest.mark.parametrize("name", sorted(n for n, e in ATTACKS.items() if e.cli == "run"))
def test_attack_objects_of_the_registry_run_from_the_cli(name: str, tiny: Path, data: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", name, str(tiny), "--data", str(data), "--alpha", "2/255,8/255", "--steps", "3",
                            "--device", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = [row for row in report["results"] if row["attack"] == name]
    assert len(rows) == 4 and all(row["psnr_lr"] >= 20 * torch.log10(torch.tensor(1 / (8 / 255))) - 0.01
                                  for row in rows if row["alpha"] == 8 / 255)
    assert "evidence" in report


def test_run_refuses_entries_with_their_own_command(tiny: Path, data: Path) -> None:
    r = runner.invoke(app, ["run", "universal", str(tiny), "--data", str(data)])
    assert r.exit_code != 0 and "sreval universal" in r.output
    r = runner.invoke(app, ["run", "nosuch", str(tiny), "--data", str(data)])
    assert r.exit_code != 0 and "unknown attack 'nosuch'" in r.output
    r = runner.invoke(app, ["run", "pgd", str(tiny), "--data", str(data), "--option", "bogus=1"])
    assert r.exit_code != 0 and "bogus" in r.output and "Traceback" not in r.output


# A new attack as a user adds one: one file, whose own defaults differ from the CLI's, and one
# registry line that names it by its import path.
NEW_ATTACK = """
from dataclasses import dataclass

from sreval.attacks.basic import GradientAttack


@dataclass(frozen=True)
class OneStep(GradientAttack):
    \"\"\"FGSM: one sign step of the whole budget, against the clean SR, not rounded.\"\"\"

    steps: int = 1
    reference: str = "clean-sr"
    quantize: bool = False
    seed: int = 7
"""


@pytest.fixture()
def fgsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "my_fgsm.py").write_text(NEW_ATTACK)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.setitem(ATTACKS, "fgsm", AttackEntry("one-step FGSM", attack="my_fgsm:OneStep"))
    return "fgsm"


def _run_config(tiny: Path, data: Path, out: Path, *args: str) -> dict[str, Any]:
    r = runner.invoke(app, ["run", "fgsm", str(tiny), "--data", str(data), "--alpha", "8/255", "--device", "cpu",
                            "--out", str(out), *args])
    assert r.exit_code == 0, r.output
    return json.loads((out / "report.json").read_text())["config"]


def test_a_new_attack_is_one_file_and_one_registry_line(fgsm: str, tiny: Path, data: Path, tmp_path: Path) -> None:
    """What adding an attack costs: its file and one AttackEntry. The CLI (`sreval run`,
    `sreval attacks`), the sweep and the HTML report then know it, with no other change; its
    own defaults hold unless an option overrides them."""
    r = runner.invoke(app, ["attacks"])
    assert r.exit_code == 0 and "one-step FGSM" in r.output and "OneStep" in r.output
    own = _run_config(tiny, data, tmp_path / "own")
    assert (own["steps"], own["reference"], own["quantize"], own["seed"]) == (1, "clean-sr", False, 7)
    assert _run_config(tiny, data, tmp_path / "opt", "--option", "steps=3")["steps"] == 3
    flags = _run_config(tiny, data, tmp_path / "flags", "--steps", "2", "--quantize", "--reference", "hr")
    assert (flags["steps"], flags["quantize"], flags["reference"], flags["seed"]) == (2, True, "hr", 7)
    for args, needle in ((["--steps", "2", "--option", "steps=1"], "steps given twice"),
                         (["--option", "bogus=1"], "unknown option(s) bogus")):
        r = runner.invoke(app, ["run", "fgsm", str(tiny), "--data", str(data), "--device", "cpu", *args])
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 1 and needle in r.output and len(lines) == 1, r.output

    r = runner.invoke(app, ["sweep", "--models", str(tiny), "--data", str(data), "--attacks", "basic,fgsm",
                            "--alpha", "8/255", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "s" / "report.json").read_text())["results"]
    fgsm_rows = {row["image"]: row["psnr_sr"] for row in rows if row["attack"] == "fgsm"}
    basic = {row["image"]: row["psnr_sr"] for row in rows if row["attack"] == "basic"}
    assert fgsm_rows and fgsm_rows.keys() == basic.keys()
    assert runner.invoke(app, ["report", str(tmp_path / "s")]).exit_code == 0
    assert "one-step FGSM" in (tmp_path / "s" / "report.html").read_text()


# each public job function and the configuration dataclass it builds: the defaults they share
CONFIGS = [(sreval.attack, "sreval.config:BasicConfig"), (sreval.partial, "sreval.config:BasicConfig"),
           (sreval.transfer, "sreval.config:BasicConfig"), (sreval.universal, "sreval.attacks.universal:UniversalConfig"),
           (sreval.targeted, "sreval.attacks.targeted:TargetedConfig"), (sreval.index, "sreval.analysis:IndexConfig"),
           (sreval.attack, "sreval.attacks.square:SquareConfig"), (sreval.sweep, "sreval.config:SweepConfig")]


@pytest.mark.parametrize(("fn", "config"), CONFIGS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_job_functions_have_their_configurations_defaults(fn: Any, config: str) -> None:
    """CLI -> function (test_cli_defaults_are_the_library_defaults) -> the job's Config: a
    default can drift at no link of the chain."""
    cls = AttackEntry("", attack=config).attack_class()
    lib = _defaults(fn)
    own = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    shared = sorted(set(own) & set(lib) - {"alphas", "alpha"})
    assert len(shared) >= 3, shared
    as_given = {k: tuple(lib[k].split(",")) if isinstance(lib[k], str) and isinstance(own[k], tuple) else lib[k]
                for k in shared}  # a list as text: 'resize,self-ensemble'
    assert as_given == {k: own[k] for k in shared}
