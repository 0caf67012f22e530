"""Hostile inputs, faults and disks (one section per finding of the hardening issue): nothing
crashes the machine, nothing is lost, nothing is silently wrong. Bombs are tested by header
only: no test here allocates more than a few MB."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from sreval import checkpoint, memory, runtime, trial, zoo
from sreval import figures as F
from sreval.attacks.basic import run_basic
from sreval.cells import CHECKSUMS
from sreval.config import BasicConfig, parse_alpha
from sreval.cli import app
from sreval.conventions import Meta
from sreval.data import Sample, downscale
from sreval.errors import DataError, ModelError
from sreval.evaluation import ImageSaver
from sreval.files import atomic_write, atomic_write_many, check_target, claim_run_dir, sha256_file
from sreval.io import read_image, write_image
from sreval.memory import MemoryBudgetError, parse_size
from sreval.model import SRModel
from sreval.report import rows_csv
from tests.test_fuzz import _png, _resize, _save, _scales, identity_loop_body
from tests.tiny import TinySR, export

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny.onnx")


def dataset(root: Path, n: int = 1, hw: tuple[int, int] = (24, 20), names: list[str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    (root / "HR").mkdir(parents=True)
    for i, name in enumerate(names or [f"img{i}" for i in range(n)]):
        write_image(root / "HR" / f"{name}.png", rng.random((hw[0], hw[1], 3)).astype(np.float32))
    return root


def run(*args: object) -> "object":
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(r: "object", *needles: str) -> str:
    text = r.output.strip()
    assert r.exit_code not in (0, None), text
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text
    return text


# ----------------------------------------------------------------------------- 1. decompression bombs


def test_bomb_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    """30000 x 30000 declared in 80 bytes: once 20 GB and the OOM killer; now one line, at once."""
    (tmp_path / "a.png").write_bytes(_png(30_000, 30_000))
    t = time.perf_counter()
    with pytest.raises(DataError, match=r"a\.png: 30000x30000 is 900,000,000 pixels, above the limit of 25,000,000"):
        read_image(tmp_path / "a.png")
    assert time.perf_counter() - t < 1


def test_pixel_limit_can_be_lowered_and_raised(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dataset(tmp_path / "set", hw=(40, 40))
    monkeypatch.setenv("SREVAL_MAX_PIXELS", "25000000")  # restored when the test ends (the CLI sets it)
    r = run("--max-pixels", 1000, "evaluate", tiny, "--data", data, "--out", tmp_path / "o", "--device", "cpu")
    one_line_error(r, "img0.png", "40x40", "1,600 pixels", "limit of 1,000")
    r = run("--max-pixels", 2000, "evaluate", tiny, "--data", data, "--out", tmp_path / "o", "--device", "cpu")
    assert r.exit_code == 0, r.output


# ----------------------------------------------------------------------------- 2. writes that destroy files


def test_special_files_are_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link_target = tmp_path / "precious.txt"
    link_target.write_text("keep me")
    link = tmp_path / "link.html"
    link.symlink_to(link_target)
    for target, kind in ((fifo, "FIFO"), (link, "symbolic link"), (tmp_path, "folder")):
        with pytest.raises(DataError, match=f"it is a {kind}"):
            atomic_write(target, "x")
    assert fifo.exists() and not fifo.is_file() and link.is_symlink() and link_target.read_text() == "keep me"
    with pytest.raises(DataError, match="it is a device"):
        check_target(Path("/dev/null"))  # checked, never written: /dev/full, /dev/null stay devices


def test_report_to_stdout_and_refused_targets(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "run"
    assert run("evaluate", tiny, "--data", dataset(tmp_path / "set"), "--out", out, "--device", "cpu").exit_code == 0
    r = run("report", out, "--markdown", "-", "--html", tmp_path / "r.html")
    assert r.exit_code == 0 and "# sreval report" in r.output, r.output
    assert not (tmp_path / "-").exists() and not (out / "-").exists()
    os.mkfifo(tmp_path / "f.html")
    one_line_error(run("report", out, "--html", tmp_path / "f.html"), "FIFO", "regular files")


def test_files_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()  # the second target is in the way: the first is not replaced either
    (tmp_path / "a").write_text("old")
    with pytest.raises(DataError):
        atomic_write_many({tmp_path / "a": "new", tmp_path / "b": "new"})
    assert (tmp_path / "a").read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sreval.")]


# ----------------------------------------------------------------------------- 3. external data


def _external_in_subgraph(folder: Path, location: str, length: int | None = None) -> Path:
    """An If whose branches hold a Constant with external data: the graph outside them has none."""
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1], data_location=TensorProto.EXTERNAL)
    w.external_data.add(key="location", value=location)
    if length is not None:
        w.external_data.add(key="length", value=str(length))

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Constant", [], [f"k_{name}"], value=w)], name, [],
                                 [helper.make_tensor_value_info(f"k_{name}", TensorProto.FLOAT, [1])])

    cond = numpy_helper.from_array(np.array(True), "cond")
    nodes = [helper.make_node("If", ["cond"], ["k"], then_branch=branch("then"), else_branch=branch("else")),
             helper.make_node("Mul", ["x", "k"], ["m"]), _resize("m")]
    return _save(folder / "m.onnx", nodes, [_scales(1, 1, 2, 2), cond])


def test_external_data_in_subgraphs_is_hashed_and_read_beside_the_model(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.array([1.0], np.float32).tobytes())
    path = _external_in_subgraph(folder, "w.bin")
    monkeypatch.chdir(tmp_path)  # resolved against the model's folder, not the current one
    first = SRModel(path, device="cpu").sha256
    (folder / "w.bin").write_bytes(np.array([2.0], np.float32).tobytes())
    assert SRModel(path, device="cpu").sha256 != first  # an edited data file is a different model


def test_external_data_through_a_linked_folder_or_short_file_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(b"\0" * 4)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "d").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelError, match="not a regular file beside the model"):
        SRModel(_external_in_subgraph(folder, "d/w.bin"), device="cpu")
    (folder / "w.bin").write_bytes(b"\0" * 2)
    with pytest.raises(ModelError, match="holds 2 bytes at offset 0, tensor 'w' needs 4"):
        SRModel(_external_in_subgraph(folder, "w.bin", length=4), device="cpu")


# ----------------------------------------------------------------------------- 4. markup from data


def test_markup_in_paths_and_names_is_printed_as_text(tmp_path: Path) -> None:
    evil = tmp_path / "a[" / "x]b[bold]"  # the path holds '[/x]' across two folders
    evil.mkdir(parents=True)
    model = export(TinySR(scale=2), evil / "m[red].onnx", metadata={"sreval.name": "evil[/x][red]name"})
    r = run("evaluate", model, "--data", dataset(evil / "set"), "--out", evil / "out", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "evil[/x][red]name" in r.output
    one_line_error(run("attack", evil / "none[red].onnx", "--out", evil / "o2"), "a[/x]b[bold]/none[red].onnx")
    one_line_error(run("attack", model, "--alpha", "[bold]8[/bold]", "--out", evil / "o3"), "'[bold]8[/bold]'")


# ----------------------------------------------------------------------------- 5. the regression gate


@pytest.mark.parametrize("cells,needle", [
    ({}, "holds no numbers"),
    ([], "'cells' must be an object"),
    ({"c": []}, "cell 'c' must map rows"),
    ({"c": {"r": 3}}, "row 'c' / 'r' must map metrics"),
    ({"c": {"r": {"psnr_sr": "high"}}}, "is 'high', not a number"),
    ({"c": {"r": {"flag": True}}}, "holds no numbers"),
])
def test_malformed_or_empty_golden_is_one_line_error(tmp_path: Path, tiny: Path, cells: object, needle: str) -> None:
    out = tmp_path / "run"
    assert run("evaluate", tiny, "--data", dataset(tmp_path / "set"), "--out", out, "--device", "cpu").exit_code == 0
    golden = tmp_path / "g.json"
    golden.write_text(json.dumps({"schema": "sreval.golden/1", "cells": cells, "config": {}}))
    one_line_error(run("check", out, "--golden", golden), needle)


# ----------------------------------------------------------------------------- 6. cache integrity


def _sweep(out: Path, data: Path, tiny: Path, *extra: object) -> "object":
    return run("sweep", "--models", tiny, "--data", data, "--attacks", "clean", "--out", out, "--device", "cpu",
               *extra)


def test_damaged_cells_are_recomputed_and_said_so(tmp_path: Path, tiny: Path) -> None:
    data, out = dataset(tmp_path / "set", n=2), tmp_path / "sweep"
    assert _sweep(out, data, tiny).exit_code == 0
    (cell,) = (out / "cells").iterdir()
    report = cell / "report.json"
    good = report.read_text()
    for damage in (lambda: report.write_text(good[: len(good) // 2]),  # truncated
                   lambda: (cell / "results.csv").write_text("image,psnr_sr\nimg0,99\n"),  # edited
                   lambda: report.write_text(json.dumps({"schema": "other"}))):  # wrong schema
        damage()
        r = _sweep(out, data, tiny)
        assert r.exit_code == 0, r.output
        assert "1 computed, 0 cached" in r.output and "damaged cell" in r.output, r.output
        assert _sweep(out, data, tiny).output.count("0 computed, 1 cached") == 1  # repaired for good


def test_crops_follow_the_source(tmp_path: Path, tiny: Path) -> None:
    data, out = dataset(tmp_path / "set", n=2, hw=(40, 40)), tmp_path / "sweep"
    assert _sweep(out, data, tiny, "--crop", 8).exit_code == 0
    (data / "HR" / "img1.png").unlink()
    assert _sweep(out, data, tiny, "--crop", 8).exit_code == 0
    images = {r["image"] for r in json.loads((out / "report.json").read_text())["results"]}
    assert images == {"img0"}


# ----------------------------------------------------------------------------- 7. output checked first


def test_unwritable_out_is_found_before_any_work(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dataset(tmp_path / "set")
    (tmp_path / "file").write_text("x")
    calls: list[str] = []
    monkeypatch.setattr("sreval.zoo.open_model", lambda *a, **k: calls.append("model") or 1 / 0)
    one_line_error(run("attack", tiny, "--data", data, "--out", tmp_path / "file"), "is not a folder")
    one_line_error(run("attack", tiny, "--data", data, "--out", tmp_path / "file" / "sub"), "is not a folder")
    one_line_error(run("attack", tiny, "--data", data, "--out", tmp_path / ("n" * 300)), "File name too long")
    one_line_error(run("attack", tiny, "--data", data, "--out", "/proc/sreval-test"), "cannot write results")
    monkeypatch.setattr("sreval.files.MIN_FREE_BYTES", 1 << 62)
    one_line_error(run("attack", tiny, "--data", data, "--out", tmp_path / "full"), "MB free")
    assert calls == []  # no model was opened: nothing was computed and lost
    assert not (tmp_path / "full").exists()  # and a failed run leaves no folder behind


HOLD = ("import sys, time; from pathlib import Path; from sreval.files import claim_run_dir\n"
        "with claim_run_dir(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")


def test_a_folder_in_use_is_refused_and_a_dead_runs_lock_is_free(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "60"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(DataError, match=f"in use by another sreval run \\(process {holder.pid}\\)"):
            with claim_run_dir(out):
                pass
        holder.kill()  # a crash: its lock file stays, with its pid, but the kernel released the lock
        holder.wait()
        assert (out / ".sreval.lock").read_text() == str(holder.pid)
        with claim_run_dir(out):
            assert (out / ".sreval.lock").read_text() == str(os.getpid())
            with claim_run_dir(out):  # a nested job of this same run
                pass
        assert not (out / ".sreval.lock").exists()
    finally:
        holder.kill()


def test_runs_restarting_together_never_share_a_folder(tmp_path: Path) -> None:
    """Six runs restarted at once on a folder whose holder died: at most one holds it at any
    time (the pid takeover let two of them in, 2-3 of 20 trials)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".sreval.lock").write_text("999999999")  # left by a run that died
    script = ("import os, sys, time; from pathlib import Path; from sreval.files import claim_run_dir\n"
              "from sreval.errors import DataError\n"
              "out = Path(sys.argv[1]); time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
              "try:\n"
              "    with claim_run_dir(out):\n"
              "        mine = out / f'holder-{os.getpid()}'; mine.write_text('')\n"
              "        time.sleep(0.3)\n"
              "        print(len(list(out.glob('holder-*'))), flush=True); mine.unlink()\n"
              "except DataError:\n"
              "    print('refused', flush=True)\n")
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(out), str(start)], stdout=subprocess.PIPE)
             for _ in range(6)]
    said = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    held = [s for s in said if s != "refused"]
    assert held and all(s == "1" for s in held), said  # whoever held it held it alone


def test_images_of_an_earlier_run_never_leak(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "run"
    first = run("attack", tiny, "--data", dataset(tmp_path / "a", names=["old"]), "--alpha", "8/255", "--steps", "1",
                "--out", out, "--device", "cpu", "--save-images", "--no-sanity")
    assert first.exit_code == 0 and list((out / "images").glob("old_*"))
    second = run("attack", tiny, "--data", dataset(tmp_path / "b", names=["new"]), "--alpha", "8/255", "--steps", "1",
                 "--out", out, "--device", "cpu", "--save-images", "--no-sanity")
    assert second.exit_code == 0
    assert not list((out / "images").glob("old_*")) and list((out / "images").glob("new_*"))


# ----------------------------------------------------------------------------- 8. identity of weights and names


def test_a_local_file_never_stands_in_for_a_zoo_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny: Path) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bicubic").write_bytes(tiny.read_bytes())
    one_line_error(run("inspect", "bicubic"), "is a zoo model and also a file or folder here", "./bicubic")
    assert run("inspect", "./bicubic").exit_code == 0


def test_other_weights_get_another_name(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_ZOO", str(tmp_path))
    sd = torch.load(assets / "weights/carn_m/carn_m.pth", weights_only=True, map_location="cpu")
    sd = {k: v + 1e-3 if k == "exit.weight" else v for k, v in sd.items()}
    tuned = tmp_path / "tuned.pth"
    torch.save(sd, tuned)
    one_line_error(run("zoo", "build", "carn-m", "--weights", tuned), "not the official carn-m checkpoint")
    r = run("zoo", "build", "carn-m", "--weights", tuned, "--other-weights")
    assert r.exit_code == 0, r.output
    digest = zoo.sha256_file(tuned)[:8]
    built = tmp_path / f"carn-m@{digest}.onnx"
    assert built.is_file() and not (tmp_path / "carn-m.onnx").exists()
    meta = {p.key: p.value for p in onnx.load(built, load_external_data=False).metadata_props}
    assert meta["sreval.name"] == f"carn-m@{digest}"


# ----------------------------------------------------------------------------- 9. runaway models


def _loops_on_large_inputs(path: Path, above: int = 64) -> Path:
    """Loop trip count max(0, H - above) * 10^15: every small probe passes, a real image hangs."""
    body = identity_loop_body()
    const = [numpy_helper.from_array(np.array(v, np.int64), n) for v, n in
             ((2, "two"), (above, "above"), (0, "zero"), (10**15, "big"))] + [
        numpy_helper.from_array(np.array(True), "C"), _scales(1, 1, 2, 2)]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "two"], ["h"]),
             helper.make_node("Sub", ["h", "above"], ["d"]), helper.make_node("Max", ["d", "zero"], ["p"]),
             helper.make_node("Mul", ["p", "big"], ["M"]), _resize("x", "r"),
             helper.make_node("Loop", ["M", "C", "r"], ["y"], body=body)]
    return _save(path, nodes, const)


def test_a_time_limit_stops_a_model_that_hangs_on_real_images(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_TIME_LIMIT", "")  # restored when the test ends (the CLI sets it)
    model = _loops_on_large_inputs(tmp_path / "m.onnx")
    data = dataset(tmp_path / "set", hw=(200, 200))
    t = time.perf_counter()
    r = run("--time-limit", 2, "evaluate", model, "--data", data, "--out", tmp_path / "o", "--device", "cpu",
            "--runtime", "onnxruntime")
    one_line_error(r, "did not finish one run within 2 s")
    assert time.perf_counter() - t < 30


def _hanging_run(tmp_path: Path) -> subprocess.Popen[str]:
    """`sreval evaluate` inside an endless onnxruntime Loop (imports and probes done, on a loaded
    2-core CI machine too)."""
    model = _loops_on_large_inputs(tmp_path / "m.onnx")
    data = dataset(tmp_path / "set", hw=(200, 200))
    env = {k: v for k, v in os.environ.items() if k not in ("SREVAL_TIME_LIMIT", "SREVAL_MAX_PIXELS")}
    proc = subprocess.Popen([sys.executable, "-m", "sreval.cli", "evaluate", str(model), "--data", str(data),
                             "--out", str(tmp_path / "o"), "--device", "cpu", "--runtime", "onnxruntime"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    time.sleep(15)
    assert proc.poll() is None
    return proc


@pytest.mark.slow
def test_ctrl_c_ends_a_run_inside_onnxruntime(tmp_path: Path) -> None:
    proc = _hanging_run(tmp_path)
    t = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in out, out
    assert time.perf_counter() - t < 10


# ----------------------------------------------------------------------------- 10. the small ones


def test_images_are_world_readable_like_reports(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
    atomic_write(tmp_path / "r.json", "{}")
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_very_long_image_names(tmp_path: Path, tiny: Path) -> None:
    name = "x" * 240
    out = tmp_path / "run"
    r = run("attack", tiny, "--data", dataset(tmp_path / "set", names=[name]), "--alpha", "8/255", "--steps", "1",
            "--out", out, "--device", "cpu", "--save-images", "--no-sanity")
    assert r.exit_code == 0, r.output
    assert all(len(p.name) < 150 for p in (out / "images").iterdir())
    assert run("report", out).exit_code == 0


def test_markdown_report_holds_names_as_text(tmp_path: Path) -> None:
    model = export(TinySR(scale=2), tmp_path / "m.onnx", metadata={"sreval.name": "<img src=x onerror=alert(1)>"})
    out = tmp_path / "run"
    assert run("evaluate", model, "--data", dataset(tmp_path / "set"), "--out", out, "--device", "cpu").exit_code == 0
    assert run("report", out).exit_code == 0
    md = (out / "report.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert\\(1\\)&gt;" in md


def test_identity_model_is_not_infinitely_robust() -> None:
    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1.0

    img = np.round(np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.float32) / 255
    (row,) = run_basic(Identity(), [Sample("a", img, img.copy())], 1, BasicConfig(alphas=(4 / 255,), steps=3),
                       device=torch.device("cpu"))
    assert np.isfinite(row["psnr_sr"]) and row["psnr_sr"] < 60
    assert row["start"] == "random: the gradient at X0 was zero"


def test_models_too_large_to_serialize_run_from_their_path(tmp_path: Path, tiny: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A model of 2 GiB and more (with external data) cannot be serialized for onnxruntime:
    it is opened from its file (the limit is lowered here instead of writing 2 GiB)."""
    proto = onnx.load(tiny)
    onnx.save(proto, tmp_path / "big.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="big.data", size_threshold=0)
    monkeypatch.setattr("sreval.runtime.PROTO_LIMIT", 1)
    monkeypatch.setattr("sreval.onnxfile.PROTO_LIMIT", 1)
    opened: list[str] = []
    real = runtime.open_session

    def spy(proto: onnx.ModelProto, name: str, device: torch.device, path: Path | None = None) -> object:
        opened.append(str(path))
        return real(proto, name, device, path)

    monkeypatch.setattr("sreval.model.open_session", spy)
    r = run("evaluate", tmp_path / "big.onnx", "--data", dataset(tmp_path / "set"), "--out", tmp_path / "o",
            "--device", "cpu", "--runtime", "onnxruntime")
    assert r.exit_code == 0, r.output
    assert opened and opened[0].endswith("big.onnx")


def test_seed_out_of_range_is_a_usage_error(tiny: Path) -> None:
    r = run("attack", tiny, "--seed", 2**64)
    assert r.exit_code == 2 and r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output and "--seed" in r.output


def test_progress_moves_with_every_attack_step() -> None:
    """Not '0/?' until an image is done: the total is known at once and every step counts."""
    hr = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    seen: list[tuple[int, int]] = []
    run_basic(TinySR(scale=2).eval(), [Sample("a", downscale(hr, 2), hr)], 2,
              BasicConfig(alphas=(2 / 255, 8 / 255), steps=4), device=torch.device("cpu"),
              progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 8) and seen[-1] == (8, 8)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 5


# ----------------------------------------------------------------------------- results.csv


@pytest.mark.parametrize("name", ["a\rb", "line\nbreak", 'quo"te,comma', "=HYPERLINK(\"http://x\")", "+1", "-2",
                                  "@SUM(A1)", "\tTAB"])
def test_results_csv_reads_back_as_the_report(name: str) -> None:
    """Every text cell quoted (a CR in an image name once made 4 rows read back as 5), cells a
    spreadsheet would run as a formula written with a leading apostrophe."""
    rows = [{"image": name, "attack": "basic", "alpha": 8 / 255, "psnr_sr": 30.5, "psnr_lr": float("inf")},
            {"image": "plain", "attack": "basic", "alpha": 2 / 255, "psnr_sr": -1.25, "psnr_lr": 40.0}]
    text = rows_csv(rows)
    back = list(csv.reader(io.StringIO(text), quoting=csv.QUOTE_NONNUMERIC))
    assert len(back) == 3 and back[0] == ["image", "attack", "alpha", "psnr_sr", "psnr_lr"]
    got = back[1][0]
    assert got == ("'" + name if name[0] in "=+-@\t\r" else name)
    assert got.lstrip("'") == name if got.startswith("'") else got == name
    assert back[1][1:4] == ["basic", 8 / 255, 30.5] and back[1][4] == ""  # an unchanged image: inf -> empty
    assert back[2] == ["plain", "basic", 2 / 255, -1.25, 40.0]  # numbers stay numbers, negative ones too


def test_a_report_embeds_no_file_from_outside_its_run_folder(tmp_path: Path, tiny: Path) -> None:
    """Paths in a run's JSON (a cell's folder, a perturbation's file name) that leave the run
    folder are not followed: `sreval report` embeds nothing from elsewhere on disk."""
    data = dataset(tmp_path / "d", n=2)
    run = tmp_path / "run"
    r = runner.invoke(app, ["universal", str(tiny), "--data", str(data), "--alpha", "8/255", "--steps", "1",
                            "--device", "cpu", "--save-images", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["report", str(run)]).exit_code == 0
    assert "fig6" in (run / "report.md").read_text()  # the perturbation figure, from files inside the run
    write_image(tmp_path / "secret.png", np.full((8, 8, 3), 0.5, np.float32))
    report = json.loads((run / "report.json").read_text())
    for p in report["universal"]["perturbations"]:
        p["png"] = "../secret.png"
    (run / "report.json").write_text(json.dumps(report))
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert "fig6" not in (run / "report.md").read_text()


# ----------------------------------------------------------------------------- numbers at their limits


def test_extreme_tolerances_and_numbers_in_golden_files(tmp_path: Path, tiny: Path) -> None:
    """`check --tol 1e308` and a 400-digit integer in a golden file once overflowed into an
    internal error: now a huge tolerance passes, a huge number is a regression in one line."""
    out = tmp_path / "run"
    assert run("evaluate", tiny, "--data", dataset(tmp_path / "set"), "--out", out, "--device", "cpu").exit_code == 0
    golden = tmp_path / "g.json"
    assert run("check", out, "--golden", golden, "--update").exit_code == 0
    r = run("check", out, "--golden", golden, "--tol", "1e308")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    g = json.loads(golden.read_text())
    cell = next(iter(g["cells"].values()))
    next(iter(cell.values()))["ssim_sr"] = 10 ** 400
    golden.write_text(json.dumps(g))
    r = run("check", out, "--golden", golden, "--tol", "1e308")
    assert r.exit_code == 1 and "regression" in r.output and "internal error" not in r.output, r.output


def test_an_infinite_time_limit_is_no_limit(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_TIME_LIMIT", "inf")
    assert runtime.run_time_limit() is None
    r = run("evaluate", tiny, "--data", dataset(tmp_path / "set"), "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("SREVAL_TIME_LIMIT", "nan")
    with pytest.raises(Exception, match="finite number of seconds"):
        runtime.run_time_limit()


def test_one_budget_written_two_ways_is_one_budget() -> None:
    """'8/255' and '0.031372549' once became two budgets, both labelled 8/255."""
    assert parse_alpha("8/255,0.031372549") == [8 / 255]
    assert parse_alpha("1/255,2/255,0.00784313725") == [1 / 255, 2 / 255]


@pytest.mark.parametrize("damage", [
    lambda rep: rep.update(results=[1, 2]),
    lambda rep: rep.update(data=[1]),
    lambda rep: rep["results"][0].update(psnr_sr="high"),
    lambda rep: rep.update(results="DEEP"),  # written below as an array deeper than the JSON reader goes
], ids=["rows-not-objects", "data-not-an-object", "psnr-not-a-number", "very-deep"])
def test_a_cell_damaged_inside_with_valid_checksums_is_recomputed(tmp_path: Path, tiny: Path, damage) -> None:
    """A cached cell whose report.json is valid JSON of the wrong shape, with its checksums made
    to match, once made every later sweep end in an internal error: it is read by the one
    validating reader, counted as damaged and recomputed."""
    data, out = dataset(tmp_path / "set", n=2), tmp_path / "sweep"
    assert _sweep(out, data, tiny).exit_code == 0
    (cell,) = (p for p in (out / "cells").iterdir() if p.is_dir())
    rep = json.loads((cell / "report.json").read_text())
    damage(rep)
    (cell / "report.json").write_text(json.dumps(rep).replace('"DEEP"', "[" * 100000 + "]" * 100000))
    sums = json.loads((cell / CHECKSUMS).read_text())
    sums["files"]["report.json"] = sha256_file(cell / "report.json")
    (cell / CHECKSUMS).write_text(json.dumps(sums))
    r = _sweep(out, data, tiny)
    assert r.exit_code == 0 and "1 computed, 0 cached" in r.output and "damaged cell" in r.output, r.output
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0


def test_special_files_as_data_are_one_line(tmp_path: Path, tiny: Path) -> None:
    """--data /dev/zero or a FIFO was an internal error (NotADirectoryError); reading one would
    never end."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for spec in ("/dev/zero", fifo):
        one_line_error(run("evaluate", tiny, "--data", spec, "--device", "cpu"), "not an image file or a folder")


# ----------------------------------------------------------------------------- text from data, printed


def test_control_characters_in_names_never_reach_the_terminal(tmp_path: Path, tiny: Path) -> None:
    """Terminal control sequences (clear screen, set the title) and a newline in image names
    print escaped: one line per row, nothing the terminal would act on."""
    names = ["clear\x1b[2Jscreen", "title\x1b]0;pwned\x07x", "two\nlines"]
    data = dataset(tmp_path / "d", n=3, names=names)
    r = run("index", tiny, "--data", data, "--samples", "2", "--steps", "1", "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output  # the index table prints every image's name
    assert not any(c in r.output for c in ("\x1b", "\x07")), repr(r.output)
    assert "two\nlines" not in r.output and "two\\nlines" in r.output.replace("\n", "")


def test_dollar_signs_in_names_are_drawn_as_written(tmp_path: Path) -> None:
    """'$...$' in a model or dataset name was parsed as matplotlib mathtext: `sreval report` died
    (or drew Greek letters). Every figure's text is now drawn as written."""
    for name in ("$\\alpha$", "a$b", "$\\notacommand$", "\\$x$"):
        png = F.curves([F.Panel(f"set {name}", "SR PSNR", {name: [(1 / 255, 30.0), (8 / 255, 20.0)]})])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_warnings_are_one_plain_line(tmp_path: Path, tiny: Path) -> None:
    """A warning of the library (an alpha channel dropped) was printed raw with sreval's file,
    line and source line; now it is one 'warning:' line."""
    (tmp_path / "d" / "HR").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "d" / "HR" / "a.png"), np.full((24, 20, 4), 128, np.uint8))
    r = run("evaluate", tiny, "--data", tmp_path / "d", "--device", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "alpha channel dropped" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and ".py:" not in r.output, r.output


# ----------------------------------------------------------------------------- 11. the memory budget
# Each case runs the CLI in a child under an explicit cap on its data segment (RLIMIT_DATA: the
# interpreter with torch holds about 1.1 GB of it), so that a regression fails the test with an
# allocation error instead of taking the machine's memory. The budget is lowered where a small
# file shows the mechanism as well as a large one.

CAP = int(2.5 * (1 << 30))


def capped(*args: object, budget: str | None = "256M", cap: int = CAP) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SREVAL_MAX_MEMORY"}
    if budget is not None:
        env["SREVAL_MAX_MEMORY"] = budget
    return subprocess.run([sys.executable, "-m", "sreval.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (cap, cap)))


def refused_for_memory(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    text = (r.stdout + r.stderr).strip()
    assert r.returncode == 1 and len(text.splitlines()) == 1 and "Traceback" not in text, text
    for n in ("the memory budget", *needles):
        assert n in text, text
    return text


@pytest.mark.slow
def test_checkpoint_tensor_and_zip_bombs_are_refused_before_allocating(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1).expand(20000, 20000)}, tmp_path / "stride.pth")  # 1.6 GB as declared
    refused_for_memory(capped("inspect", tmp_path / "stride.pth", budget=None), "tensors", "1.6 GB")
    torch.save({"w": torch.zeros(100_000_000 // 4)}, tmp_path / "plain.pth")
    with zipfile.ZipFile(tmp_path / "plain.pth") as zi, \
            zipfile.ZipFile(tmp_path / "zip.pth", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))
    assert (tmp_path / "zip.pth").stat().st_size < 1_000_000
    refused_for_memory(capped("inspect", tmp_path / "zip.pth", budget="64M"), "zip records")
    torch.save({"w": torch.eye(3).to_sparse()}, tmp_path / "sparse.pth")
    r = capped("inspect", tmp_path / "sparse.pth")
    assert r.returncode == 1 and "stored as sparse_coo" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_a_small_checkpoint_declaring_a_huge_network_is_refused_before_building_it(tmp_path: Path) -> None:
    pytest.importorskip("spandrel")
    # RealESRGAN Compact's layout: 4096 features and 1000 convolutions (604 GB) from 1.3 MB of tensors
    sd = {"body.0.weight": torch.zeros(4096, 3, 3, 3), "body.0.bias": torch.zeros(4096), "body.1.weight": torch.zeros(4096)}
    for i in range(1, 1001):
        sd |= {f"body.{2 * i}.weight": torch.zeros(1), f"body.{2 * i}.bias": torch.zeros(1),
               f"body.{2 * i + 1}.weight": torch.zeros(1)}
    sd |= {"body.2002.weight": torch.zeros(48, 1, 3, 3), "body.2002.bias": torch.zeros(48)}
    torch.save(sd, tmp_path / "huge.pth")
    refused_for_memory(capped("inspect", tmp_path / "huge.pth", budget=None), "the network this checkpoint describes")


@pytest.mark.slow
def test_external_data_on_a_sparse_file_is_refused_before_reading(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    with open(folder / "w.bin", "wb") as f:  # 4 GB, none of it on disk
        f.truncate(4 << 30)
    r = capped("inspect", _external_in_subgraph(folder, "w.bin"), budget=None)
    text = (r.stdout + r.stderr).strip()
    assert r.returncode == 1 and len(text.splitlines()) == 1, text
    assert "holds 4294967296 bytes at offset 0, tensor 'w' needs 4" in text, text


def test_external_data_counts_against_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.array([1.0], np.float32).tobytes())
    path = _external_in_subgraph(folder, "w.bin")
    monkeypatch.setenv("SREVAL_MAX_MEMORY", "1M")
    SRModel(path, device="cpu")
    with open(folder / "m.onnx", "ab") as f:  # the file itself over the budget
        f.truncate((2 << 20))
    with pytest.raises(MemoryBudgetError, match="reading the model file"):
        SRModel(path, device="cpu")


@pytest.mark.slow
def test_a_dataset_is_counted_as_it_is_read(tmp_path: Path, tiny: Path) -> None:
    data = tmp_path / "big"
    data.mkdir()
    flat = np.full((1000, 1000, 3), 0.5, np.float32)  # 1 MP each (16 MB held, 80 MB to make its LR), a few kB as PNG
    for i in range(8):
        write_image(data / f"img{i}.png", flat)
    refused_for_memory(capped("evaluate", tiny, "--data", data, "--device", "cpu", "--out", tmp_path / "o",
                              budget="128M"), "dataset", "held together")
    r = capped("evaluate", tiny, "--data", data, "--limit", "2", "--device", "cpu", "--out", tmp_path / "o2",
               budget="128M")
    assert r.returncode == 0, r.stderr  # what fits is not refused


def _constant_of_shape_bomb(path: Path) -> Path:
    """3 x 16000 x 16000 floats (3.1 GB) made at run time by a 200-byte graph."""
    shape = numpy_helper.from_array(np.array([1, 3, 16000, 16000], np.int64), "s")
    nodes = [helper.make_node("ReduceMean", ["x"], ["r"], keepdims=1),
             helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("Add", ["c", "r"], ["y"])]
    graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16000, 16000])], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _fixed_x16(path: Path) -> Path:
    """A fixed 1024 x 1024 input and a x16 output: 3.2 GB per run."""
    graph = helper.make_graph([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest")], "x16",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1024, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16384, 16384])],
                              [numpy_helper.from_array(np.array([1, 1, 16, 16], np.float32), "sc")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.slow
def test_graphs_that_allocate_at_run_time_are_stopped_in_a_capped_child(tmp_path: Path) -> None:
    refused_for_memory(capped("inspect", _constant_of_shape_bomb(tmp_path / "cos.onnx"), budget=None),
                       "running the model on a 1x3x24x24 input")
    refused_for_memory(capped("evaluate", _fixed_x16(tmp_path / "x16.onnx"), "--data", "default", "--out",
                              tmp_path / "o", budget=None), "1x3x1024x1024")


def test_the_first_run_of_a_file_happens_in_a_capped_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_MAX_MEMORY", "32M")
    with pytest.raises(MemoryBudgetError, match="1x3x24x24 input needs more than the memory budget of 32 MB"):
        SRModel(_constant_of_shape_bomb(tmp_path / "cos.onnx"), device="cpu")
    model = export(TinySR(scale=2), tmp_path / "ok.onnx")
    SRModel(model, device="cpu").check_parity()  # an ordinary model passes its trial under a small budget
    assert any(d.startswith(SRModel(model, device="cpu").sha256) for d, _ in trial._PASSED)


@pytest.mark.parametrize("text, size", [("800M", 800 * 10**6), ("1.5G", 1.5e9), ("2GiB", 2 << 30), ("1048576", 1 << 20), ("1M", 10**6)])
def test_memory_sizes_are_read_with_their_units(text: str, size: float) -> None:
    assert parse_size(text) == int(size)


@pytest.mark.parametrize("bad", ["12x", "-1G", "0.5", "inf", "nanG", ""])
def test_a_bad_memory_budget_is_one_line(bad: str) -> None:
    r = run("--max-memory", bad, "attacks")
    assert r.exit_code == 2 and "--max-memory must be" in r.output, r.output


def test_the_default_budget_is_a_share_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SREVAL_MAX_MEMORY", raising=False)
    monkeypatch.setattr(memory, "available", lambda: 600 << 20)
    assert memory.budget() == 300 << 20
    monkeypatch.setattr(memory, "available", lambda: 64 << 30)
    assert memory.budget() == memory.DEFAULT_CAP


# ----------------------------------------------------------------------------- 12. no stale or mixed results


def _compact(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    sd = {"body.0.weight": torch.randn(4, 3, 3, 3), "body.0.bias": torch.randn(4), "body.1.weight": torch.rand(4),
          "body.2.weight": torch.randn(12, 4, 3, 3) * 0.1, "body.2.bias": torch.randn(12) * 0.1}
    torch.save(sd, path)
    return path


@pytest.mark.slow
def test_the_export_cache_holds_the_weights_it_was_keyed_by(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("spandrel")
    monkeypatch.setenv("SREVAL_CACHE", str(tmp_path / "cache"))
    ckpt = _compact(tmp_path / "latest.pth", 0)
    digest_a = checkpoint.state_dict_digest(checkpoint.read_state_dict(ckpt))

    def weights(p: Path) -> str:
        return next(m.value for m in onnx.load(str(p)).metadata_props if m.key == Meta.WEIGHTS_SHA256)

    # a training job rewrites the checkpoint while the export starts: the export is of the bytes read
    done = checkpoint.cached_onnx(ckpt, on_export=lambda _: _compact(ckpt, 1))
    assert weights(done) == digest_a
    digest_b = checkpoint.state_dict_digest(checkpoint.read_state_dict(ckpt))
    assert digest_b != digest_a
    # a file planted under B's key with A's weights (and a matching record) is not taken
    planted = done.with_name(done.name.replace(digest_a[:24], digest_b[:24]))
    planted.write_bytes(done.read_bytes())
    record = json.loads(done.with_suffix(".json").read_text()) | {"sha256": sha256_file(planted)}
    planted.with_suffix(".json").write_text(json.dumps(record))
    assert weights(checkpoint.cached_onnx(ckpt)) == digest_b


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
def test_export_to_a_special_target_is_one_line(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("spandrel")
    target = tmp_path / "out.onnx"
    if kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to(tmp_path / "elsewhere.onnx")
    r = run("export", _compact(tmp_path / "c.pth", 0), "-o", target)
    one_line_error(r, "is not a regular file")


def test_a_failed_rerun_leaves_the_earlier_run_whole(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    common = ("--alpha", "8/255", "--steps", "1", "--out", out, "--device", "cpu", "--save-images", "--no-sanity")
    assert run("attack", tiny, "--data", dataset(tmp_path / "a", n=2), *common).exit_code == 0
    report, images = (out / "report.json").read_bytes(), sorted(p.name for p in (out / "images").iterdir())
    saved = ImageSaver.__call__

    def second_image_fails(self: ImageSaver, name: str, **kw: torch.Tensor) -> None:
        if name.startswith("img1"):
            raise ModelError("the model failed halfway")
        saved(self, name, **kw)

    monkeypatch.setattr(ImageSaver, "__call__", second_image_fails)
    r = run("attack", tiny, "--data", dataset(tmp_path / "b", n=2, hw=(20, 16)), *common)
    one_line_error(r, "failed halfway")
    assert (out / "report.json").read_bytes() == report
    assert sorted(p.name for p in (out / "images").iterdir()) == images
    assert [p.name for p in out.iterdir() if p.name.startswith(".images")] == []


def test_every_image_of_a_run_command_is_kept(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "run"
    r = run("run", "pgd", tiny, "--data", dataset(tmp_path / "a", n=3), "--alpha", "8/255", "--steps", "1",
            "--out", out, "--device", "cpu", "--save-images")
    assert r.exit_code == 0, r.output
    assert {p.name.split("_")[0] for p in (out / "images").glob("*.png")} == {"img0", "img1", "img2"}


@pytest.mark.slow
def test_a_second_ctrl_c_ends_the_process_silently(tmp_path: Path) -> None:
    proc = _hanging_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    # 130, or killed by SIGINT itself where it came after Python restored the default handler
    # at its finalization (a shell shows 130 for both)
    assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in out and "Exception ignored" not in out, out
    assert out.strip() in ("interrupted", ""), out


def test_each_onnxruntime_run_is_bounded_by_what_the_trial_measured(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_MAX_MEMORY", "5M")
    model = SRModel(export(TinySR(scale=2), tmp_path / "m.onnx"), device="cpu")
    ref = model.ort()
    assert model.run_bytes is not None and model.run_bytes >= 16  # at least its x2 output, float32
    ref(torch.rand(1, 3, 32, 32))
    with pytest.raises(MemoryBudgetError, match="running the model on a 1x3x300x300 input needs about"):
        ref(torch.rand(1, 3, 300, 300))


@pytest.mark.slow
@pytest.mark.parametrize("how, said", [
    ("os.kill(os.getpid(), signal.SIGKILL)", "the exporter was killed (SIGKILL: out of memory?)"),
    ("sys.stderr.write('Traceback (most recent call last):\\nOSError: [Errno 28] No space left on device\\n'); sys.stderr.flush(); os._exit(1)",
     "the export process failed (exit 1): OSError: [Errno 28] No space left on device"),
])
def test_an_export_child_that_dies_is_reported_by_its_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            how: str, said: str) -> None:
    pytest.importorskip("spandrel")
    site = tmp_path / "site"
    site.mkdir()  # only the export child starts an interpreter here: it dies as a child can
    (site / "sitecustomize.py").write_text(f"import os, signal, sys\n{how}\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    r = run("export", _compact(tmp_path / "c.pth", 0), "-o", tmp_path / "c.onnx")
    one_line_error(r, said)
    assert not (tmp_path / "c.onnx").exists() and not list(tmp_path.glob(".c.onnx*"))


def test_a_crash_in_the_first_run_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()  # the trial child crashes as onnxruntime does on some hostile graphs
    (site / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(trial, "_PASSED", {})  # no trial of the same bytes remembered from another test
    r = run("inspect", export(TinySR(scale=2), tmp_path / "m.onnx"))
    one_line_error(r, "m.onnx: onnxruntime crashed running the model (SIGSEGV)")


def test_a_linked_images_folder_is_replaced_not_followed(tmp_path: Path, tiny: Path) -> None:
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.png").write_bytes(b"not ours")
    out.mkdir()
    (out / "images").symlink_to(elsewhere, target_is_directory=True)
    r = run("attack", tiny, "--data", dataset(tmp_path / "a"), "--alpha", "8/255", "--steps", "1", "--out", out,
            "--device", "cpu", "--save-images", "--no-sanity")
    assert r.exit_code == 0, r.output
    assert (elsewhere / "keep.png").read_bytes() == b"not ours" and list(elsewhere.iterdir()) == [elsewhere / "keep.png"]
    assert not (out / "images").is_symlink() and list((out / "images").glob("img0_*.png"))
