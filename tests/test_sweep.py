"""Sweeps: the grid, the cell cache (resume, no half-written cell counts), the merged report,
the CLI, and the Ray executor against a local Ray instance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner


from sreval import executors, sweeps as S
from sreval.cells import STAGING_PREFIX, is_done
from sreval.cli import app
from sreval.data import load_dataset
from sreval.errors import ConfigError, DataError
from sreval.io import write_image
from tests.tiny import TinySR, export

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(root / "set" / "HR" / f"img{i}.png", rng.random((24, 28, 3)).astype(np.float32))
    return {"a": export(TinySR(scale=2, seed=0), root / "a.onnx"), "b": export(TinySR(scale=2, seed=1), root / "b.onnx"),
            "data": root / "set"}


def config(world: dict[str, Path], **kw: object) -> S.SweepConfig:
    base = dict(models=(str(world["a"]), str(world["b"])), datasets=(str(world["data"]),), attacks=("basic",),
                alphas=(2 / 255, 8 / 255), steps=2, crop=8)
    return S.SweepConfig(**{**base, **kw})  # type: ignore[arg-type]


class Counting:
    """Wraps the attack runners: counts the cells actually computed; can fail one on purpose."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None, error: BaseException | None = None):
        self.calls: list[str] = []
        self.fail_at, self.error = fail_at, error
        runner = executors.cell_runner
        monkeypatch.setattr(executors, "cell_runner", lambda name: self.wrap(runner(name)))

    def wrap(self, fn):  # type: ignore[no-untyped-def]
        def run(cfg, cell, common):  # type: ignore[no-untyped-def]
            self.calls.append(cell.key)
            out = common["out"]
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                (out / "images").mkdir(exist_ok=True)
                (out / "report.json").write_text("{}")  # a half-written cell, as a crash leaves it
                raise self.error  # type: ignore[misc]
            return fn(cfg, cell, common)

        return run


def test_grid_merge_and_cache(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counting(monkeypatch)
    cfg = config(world, attacks=("basic", "partial"))
    seen: list[tuple[float, float]] = []
    res = S.run_sweep(cfg, tmp_path, device="cpu", progress=lambda d, t: seen.append((d, t)))
    assert [o.status for o in res.outcomes] == ["done"] * 4 and len(counter.calls) == 4
    assert seen[-1] == (4, 4) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["command"] == "sweep" and rep["sweep"]["complete"] is True
    rows = rep["results"]
    assert {r["model"] for r in rows} == {"a", "b"} and {r["dataset"] for r in rows} == {"set"}
    assert len(rows) == 2 * 2 * 2 * 2  # attacks x models x images x budgets
    assert {(s["model"], s["attack"]) for s in rep["summary"]} == {(m, a) for m in "ab" for a in ("basic", "partial")}
    partial = next(c for c in rep["sweep"]["cells"] if c["attack"] == "partial")
    assert "permeation" in partial["sections"]
    for c in rep["sweep"]["cells"]:
        cell = tmp_path / c["dir"]
        assert (cell / "report.json").is_file() and (cell / "results.csv").is_file()
        kept = {p.name.split("_")[0] for p in (cell / "images").iterdir()}
        assert kept == {"img0"}, "only the first image's PNGs are kept"
        assert (cell / "images" / "img0_lr_clean.png").is_file()
    assert (tmp_path / "results.csv").read_text().count("\n") == len(rows) + 1
    # a second run computes nothing
    again = S.run_sweep(cfg, tmp_path, device="cpu")
    assert [o.status for o in again.outcomes] == ["cached"] * 4 and len(counter.calls) == 4


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit("killed")])
def test_interrupted_sweep_resumes(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   error: BaseException) -> None:
    cfg = config(world)
    counter = Counting(monkeypatch, fail_at=2, error=error)
    with pytest.raises(type(error)):
        S.run_sweep(cfg, tmp_path, device="cpu")
    cells = S.plan_sweep(cfg, tmp_path)
    assert is_done(tmp_path, cells[0].key) and not is_done(tmp_path, cells[1].key)
    assert not list((tmp_path / "cells").glob(".staging-*")), "the half-written cell was not cleaned up"
    assert json.loads((tmp_path / "report.json").read_text())["sweep"]["complete"] is False
    counter.fail_at = None
    res = S.run_sweep(cfg, tmp_path, device="cpu")
    assert [o.status for o in res.outcomes] == ["cached", "done"]
    assert counter.calls == [cells[0].key, cells[1].key, cells[1].key]


def test_power_loss_leftovers_never_count(world: dict[str, Path], tmp_path: Path) -> None:
    cfg = config(world)
    cells = S.plan_sweep(cfg, tmp_path)
    # what a power loss can leave: a staging folder with a complete-looking report, and a
    # cell folder without report.json
    staged = tmp_path / "cells" / f"{STAGING_PREFIX}{cells[0].key}.999999999.abc"  # its process is gone
    staged.mkdir(parents=True)
    (staged / "report.json").write_text("{}")
    live = tmp_path / "cells" / f"{STAGING_PREFIX}{cells[0].key}.{os.getppid()}.abc"  # a sweep still running
    live.mkdir()
    (tmp_path / "cells" / cells[1].key).mkdir()
    assert not is_done(tmp_path, cells[0].key) and not is_done(tmp_path, cells[1].key)
    res = S.run_sweep(cfg, tmp_path, device="cpu")
    assert [o.status for o in res.outcomes] == ["done", "done"]
    assert not staged.exists() and live.exists()


@pytest.mark.parametrize("error, message", [(DataError("model exploded"), "model exploded"),
                                            (RuntimeError("Output size is too small"), "RuntimeError: Output size")])
def test_failed_cell_keeps_the_others(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      error: Exception, message: str) -> None:
    Counting(monkeypatch, fail_at=1, error=error)
    cfg = config(world)
    with pytest.raises(S.SweepError, match=rf"1 of 2 cells failed.*basic / a / set: {message}"):
        S.run_sweep(cfg, tmp_path, device="cpu")
    cells = S.plan_sweep(cfg, tmp_path)
    assert [is_done(tmp_path, c.key) for c in cells] == [False, True]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert {r["model"] for r in rep["results"]} == {"b"} and rep["sweep"]["complete"] is False


def test_cell_key_identity(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = {c.attack + c.model: c.key for c in S.plan_sweep(config(world), tmp_path)}
    assert len(set(key.values())) == 2
    same = {c.attack + c.model: c.key for c in S.plan_sweep(config(world), tmp_path / "other")}
    assert same == key, "the key depends on content, not on the run folder"
    for change in (dict(steps=3), dict(alphas=(4 / 255,)), dict(seed=1), dict(crop=6), dict(reference="clean-sr")):
        changed = {c.attack + c.model: c.key for c in S.plan_sweep(config(world, **change), tmp_path / "x")}
        assert set(changed.values()).isdisjoint(key.values()), change
    # another version of the code that computes the numbers: nothing cached is reused
    monkeypatch.setattr(S, "code_version", lambda: "0.0.0+other")
    assert set(c.key for c in S.plan_sweep(config(world), tmp_path)).isdisjoint(key.values())


def test_crops_are_exact(world: dict[str, Path], tmp_path: Path) -> None:
    samples = load_dataset(world["data"], 2)
    S.write_crops(samples, 2, 5, tmp_path / "c")
    crops = load_dataset(tmp_path / "c", 2)
    for s, c in zip(samples, crops):
        top, left = (s.lr.shape[0] - 5) // 2, (s.lr.shape[1] - 5) // 2
        assert np.array_equal(c.lr, s.lr[top:top + 5, left:left + 5])
        assert np.array_equal(c.hr, s.hr[2 * top:2 * top + 10, 2 * left:2 * left + 10])


def test_dataset_names_resolve_from_data_root(world: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(world, datasets=("set",), models=(str(world["a"]),))
    with pytest.raises(DataError, match="'set' not found"):
        S.plan_sweep(cfg, tmp_path, data_root=tmp_path / "nowhere")
    assert S.plan_sweep(cfg, tmp_path, data_root=world["data"].parent)[0].dataset == "set"
    monkeypatch.setenv("SREVAL_DATA", str(world["data"].parent))
    assert S.plan_sweep(cfg, tmp_path)[0].dataset == "set"


@pytest.mark.parametrize("bad, match", [
    (dict(attacks=("basic", "nope")), "unknown attack"),
    (dict(alphas=(0.0,)), "budget"),
    (dict(steps=0), "steps"),
    (dict(crop=0), "crop"),
    (dict(attacks=("transfer",), models=("x.onnx",)), "two models"),
    (dict(attacks=("defense",), defenses=("magic",)), "unknown defense"),
])
def test_config_validation(world: dict[str, Path], bad: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config(world, **bad)


def run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result: object, *needles: str) -> None:
    assert result.exit_code != 0, result.output  # type: ignore[attr-defined]
    text = result.output.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n.lower() in text.lower(), text


def test_cli_sweep(world: dict[str, Path], tmp_path: Path) -> None:
    r = run("sweep", "--models", f"{world['a']},{world['b']}", "--data", world["data"], "--attacks", "basic",
            "--alpha", "8/255", "--steps", "2", "--crop", "8", "--out", tmp_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "2 computed" in r.output and "report.json" in r.output
    r = run("sweep", "--models", f"{world['a']},{world['b']}", "--data", world["data"], "--attacks", "basic",
            "--alpha", "8/255", "--steps", "2", "--crop", "8", "--out", tmp_path, "--device", "cpu")
    assert r.exit_code == 0 and "2 cached" in r.output, r.output


@pytest.mark.parametrize("args, needles", [
    (["--attacks", "basic,bogus"], ["unknown attack", "bogus"]),
    (["--alpha", "8/0"], ["budget"]),
    (["--data", "NoSuchSet"], ["NoSuchSet", "not found"]),
    (["--executor", "slurm"], ["executor"]),
])
def test_cli_sweep_bad_input(world: dict[str, Path], tmp_path: Path, args: list[str], needles: list[str]) -> None:
    base = {"--models": str(world["a"]), "--data": str(world["data"]), "--attacks": "basic", "--alpha": "8/255"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    one_line_error(run("sweep", *flat, "--steps", "1", "--out", tmp_path, "--device", "cpu"), *needles)


def test_cli_sweep_missing_model(tmp_path: Path) -> None:
    one_line_error(run("sweep", "--models", tmp_path / "none.onnx", "--out", tmp_path), "none.onnx")


# ----------------------------------------------------------------------------- Ray


def _ray():  # type: ignore[no-untyped-def]
    try:
        import ray
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ray is not installed (the ray extra): the Ray executor test must run in CI")
        pytest.skip("ray is not installed (the ray extra)")
    return ray


@pytest.mark.slow
def test_ray_executor(world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = _ray()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # a local instance started here, as a cluster would be (the sweep joins an initialized Ray)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cfg = config(world)
        res = S.run_sweep(cfg, tmp_path, executor="ray", device="cpu")
        assert [o.status for o in res.outcomes] == ["done", "done"]
        local = S.run_sweep(cfg, tmp_path / "local", device="cpu")
        ray_rows = {(r["cell"], r["image"], r["alpha"]): r["psnr_sr"] for r in res.report["results"]}
        local_rows = {(r["cell"], r["image"], r["alpha"]): r["psnr_sr"] for r in local.report["results"]}
        assert ray_rows.keys() == local_rows.keys() and len(ray_rows) == 8
        assert list(ray_rows.values()) == pytest.approx([local_rows[k] for k in ray_rows], abs=1e-3)
        assert all((tmp_path / c["dir"] / "images" / "img0_lr_clean.png").is_file() for c in res.report["sweep"]["cells"])
        again = S.run_sweep(cfg, tmp_path, executor="ray", device="cpu")
        assert [o.status for o in again.outcomes] == ["cached", "cached"]
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- a real process, stopped


def _wait_for_a_cell(proc: "subprocess.Popen[bytes]", run_dir: Path, timeout: float = 120) -> None:
    import time

    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if any((c / "report.json").is_file() for c in (run_dir / "cells").glob("basic-*")):
            return
        time.sleep(0.2)
    pytest.fail(f"no cell finished in {timeout} s (exit code {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_stopped_process_resumes(tmp_path: Path, sig: str) -> None:
    """Ctrl-C (SIGINT) and a hard kill (as a crash or power loss leaves it) of `sreval sweep`:
    the finished cells stay done, nothing half-written counts, the rerun computes the rest."""
    import signal
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for i in range(2):
        write_image(tmp_path / "big" / "HR" / f"img{i}.png", rng.random((96, 112, 3)).astype(np.float32))
    # the second cell's model is the slower one, so the signal lands while it runs
    models = f"{export(TinySR(scale=2), tmp_path / 'fast.onnx')},{export(TinySR(scale=2, feats=64), tmp_path / 'slow.onnx')}"
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "sreval.cli", "sweep", "--models", models, "--data", str(tmp_path / "big"),
           "--attacks", "basic", "--alpha", "2/255,8/255", "--steps", "300", "--out", str(run_dir), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _wait_for_a_cell(proc, run_dir)
        proc.send_signal(getattr(signal, sig))
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if sig == "SIGINT":
        assert proc.returncode == 130 and b"interrupted" in stderr, stderr[-2000:]
        assert json.loads((run_dir / "report.json").read_text())["sweep"]["complete"] is False
    done = {c.name for c in (run_dir / "cells").iterdir() if (c / "report.json").is_file()}
    assert len(done) == 1 and next(iter(done)).startswith("basic-fast-"), done
    r = runner.invoke(app, [a for a in cmd[3:]])
    assert r.exit_code == 0, r.output
    assert "1 computed, 1 cached" in r.output, r.output
    assert not list((run_dir / "cells").glob(".staging-*"))
