"""Hardening: malformed ONNX files and images through the CLI. Every one must end in ONE line
of error, a non-zero exit code, no traceback, no hang (each run bounded in time) and no file
written outside the run's output folder.

Most cases run in-process (typer's CliRunner under a SIGALRM guard; pytest's capfd sees what
C libraries write straight to file descriptor 2); two run the real entry point in a
subprocess with a timeout.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from sreval.cli import app
from sreval.io import write_image
from tests.tiny import TinySR, export

runner = CliRunner()
LIMIT_S = 60  # per run; a healthy failure takes well under a second


# ----------------------------------------------------------------------------- harness


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def listing(*roots: Path) -> set[Path]:
    return {p for r in roots if r.exists() for p in r.rglob("*")} | {r for r in roots if r.exists()}


def assert_fails_cleanly(args: list[str], work: Path, capfd: pytest.CaptureFixture[str],
                         *needles: str, watch: tuple[Path, ...] = ()) -> str:
    """Run the CLI in `work`; assert one line, non-zero exit, no traceback, nothing written
    outside work/out. Returns the message."""
    out = work / "out"
    before = listing(work, *watch)
    capfd.readouterr()
    with time_limit(LIMIT_S):
        result = runner.invoke(app, [str(a) for a in args] + ["--out", str(out)] if args[0] != "inspect"
                               else [str(a) for a in args])
    c_level = capfd.readouterr()
    text = result.output.strip()
    assert result.exit_code not in (0, None), text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text + c_level.err
    assert len(text.splitlines()) == 1, text
    assert c_level.err.strip() == "" and c_level.out.strip() == "", c_level  # no C-level chatter
    for n in needles:
        assert n.lower() in text.lower(), text
    new = listing(work, *watch) - before
    assert all(out in p.parents or p == out for p in new), sorted(new)
    assert not (out / "report.json").exists()
    return text


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    monkeypatch.chdir(w)
    return w


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(TinySR(scale=2), tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("d") / "set"
    (root / "HR").mkdir(parents=True)
    write_image(root / "HR" / "a.png", np.random.default_rng(0).random((24, 20, 3)).astype(np.float32))
    return root


# ----------------------------------------------------------------------------- malformed ONNX


def _save(path: Path, nodes: list, inits: list | None = None, *, inp: list | None = None,
          out_shape: list | None = None, opset: int = 17, elem: int = TensorProto.FLOAT,
          extra_inputs: list | None = None) -> Path:
    x = helper.make_tensor_value_info("x", elem, inp or [1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or [1, 3, None, None])
    g = helper.make_graph(nodes, "g", [x, *(extra_inputs or [])], [y], initializer=inits or [])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _scales(*s: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(s, np.float32), "scales")


def _resize(src: str = "x", dst: str = "y") -> onnx.NodeProto:
    return helper.make_node("Resize", [src, "", "scales"], [dst], mode="nearest")


def _external(path: Path, location: str) -> Path:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 3, 1, 1], data_location=TensorProto.EXTERNAL)
    w.external_data.add(key="location", value=location)
    return _save(path, [helper.make_node("Conv", ["x", "w"], ["c"]), _resize("c")], [_scales(1, 1, 2, 2), w])


def identity_loop_body() -> onnx.GraphProto:
    """A Loop body that passes its condition and value through: the loop runs M times."""
    return helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])


def _loop_forever(path: Path) -> Path:
    body = identity_loop_body()
    inits = [_scales(1, 1, 2, 2), numpy_helper.from_array(np.array(10**15, np.int64), "M"),
             numpy_helper.from_array(np.array(True), "C")]
    return _save(path, [_resize("x", "r"), helper.make_node("Loop", ["M", "C", "r"], ["y"], body=body)], inits)


def _huge_initializer(path: Path) -> Path:
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000], raw_data=b"\0" * 4)
    return _save(path, [_resize("x", "r"), helper.make_node("Add", ["r", "big"], ["y"])], [_scales(1, 1, 2, 2), big])


def _constant_of_shape(path: Path) -> Path:
    shape = numpy_helper.from_array(np.array([1, 3, 1_000_000, 1_000_000], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["z"]), _resize("x", "r"),
             helper.make_node("Add", ["r", "z"], ["y"])]
    return _save(path, nodes, [_scales(1, 1, 2, 2), shape])


def _two_inputs(path: Path) -> Path:
    second = helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 3, None, None])
    nodes = [helper.make_node("Add", ["x", "x2"], ["a"]), _resize("a")]
    return _save(path, nodes, [_scales(1, 1, 2, 2)], extra_inputs=[second])


def _integer_input(path: Path) -> Path:
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), _resize("f")]
    return _save(path, nodes, [_scales(1, 1, 2, 2)], elem=TensorProto.INT64)


def _cycle(path: Path) -> Path:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), _resize("a", "b"), helper.make_node("Identity", ["b"], ["y"])]
    return _save(path, nodes, [_scales(1, 1, 2, 2)])


MODELS: dict[str, tuple[Callable[[Path, Path], Path], tuple[str, ...]]] = {
    "empty": (lambda p, t: (p.write_bytes(b""), p)[1], ("empty file",)),
    "wrong_magic": (lambda p, t: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), p)[1], ("not an onnx model",)),
    "random_bytes": (lambda p, t: (p.write_bytes(np.random.default_rng(3).bytes(4096)), p)[1], ("onnx",)),
    "truncated": (lambda p, t: (p.write_bytes(t.read_bytes()[: t.stat().st_size * 3 // 5]), p)[1], ("m.onnx",)),
    "directory": (lambda p, t: (p.mkdir(), p)[1], ("not a file",)),
    "cycle": (lambda p, t: _cycle(p), ("invalid onnx model", "topologically")),
    "missing_initializer": (lambda p, t: _save(p, [helper.make_node("Conv", ["x", "w"], ["c"]), _resize("c")],
                                                [_scales(1, 1, 2, 2)]), ("invalid onnx model",)),
    "huge_initializer": (lambda p, t: _huge_initializer(p), ("invalid onnx model",)),
    "constant_of_shape_1e12": (lambda p, t: _constant_of_shape(p), ("needs more than the memory budget",)),
    "huge_input_shape": (lambda p, t: _save(p, [_resize()], [_scales(1, 1, 2, 2)], inp=[1, 3, 100000, 100000]),
                         ("too large", "100000")),
    "huge_output": (lambda p, t: _save(p, [_resize()], [_scales(1, 1, 10000, 10000)]), ("needs more than the memory budget",)),
    "non_image_output": (lambda p, t: _save(p, [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
                                            opset=13, out_shape=[1, 3]), ("not an sr model",)),
    "non_integer_scale": (lambda p, t: _save(p, [_resize()], [_scales(1, 1, 1.5, 1.5)]), ("integer multiple",)),
    "nan_output": (lambda p, t: _save(p, [helper.make_node("Sub", ["x", "x"], ["z"]),
                                          helper.make_node("Div", ["x", "z"], ["d"]), _resize("d")],
                                      [_scales(1, 1, 2, 2)]), ("nan or inf",)),
    "two_inputs": (lambda p, t: _two_inputs(p), ("two image inputs",)),
    "integer_input": (lambda p, t: _integer_input(p), ("float32, float16, uint8 or uint16 expected",)),
    "rank2_input": (lambda p, t: _save(p, [helper.make_node("Identity", ["x"], ["y"])], inp=[None, None],
                                       out_shape=[None, None]), ("not an image of rank 4 or 3",)),
    "unknown_domain": (lambda p, t: _save(p, [helper.make_node("Evil", ["x"], ["y"], domain="com.evil")]),
                       ("invalid onnx model",)),
    "external_outside": (lambda p, t: _external(p, "../../../../etc/passwd"), ("external data",)),
    "external_absolute": (lambda p, t: _external(p, "/dev/zero"), ("external data",)),
    "external_symlink_to_device": (lambda p, t: (os.symlink("/dev/zero", p.parent / "w.bin"), _external(p, "w.bin"))[1],
                                   ("external data",)),
    "external_missing": (lambda p, t: _external(p, "nowhere.bin"), ("external data",)),
    "loop_forever": (lambda p, t: _loop_forever(p), ("did not finish",)),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_malformed_model(case: str, tmp_path: Path, work: Path, tiny: Path, data: Path,
                         capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SREVAL_PROBE_TIMEOUT", "2")  # the looping graph: stop it soon
    folder = tmp_path / "models"
    folder.mkdir()
    build, needles = MODELS[case]
    path = build(folder / "m.onnx", tiny)
    assert_fails_cleanly(["evaluate", path, "--data", data, "--device", "cpu"], work, capfd, *needles,
                         watch=(folder, data))


@pytest.mark.parametrize("case", ["truncated", "huge_input_shape", "non_image_output"])
def test_malformed_model_inspect_and_attack(case: str, tmp_path: Path, work: Path, tiny: Path, data: Path,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    build, needles = MODELS[case]
    path = build(tmp_path / "m.onnx", tiny)
    assert_fails_cleanly(["inspect", path, "--device", "cpu"], work, capfd, *needles)
    assert_fails_cleanly(["attack", path, "--data", data, "--steps", "1", "--device", "cpu"], work, capfd, *needles)


# ----------------------------------------------------------------------------- malformed images


def _png(width: int, height: int, payload: bytes = b"\0" * 10) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(payload)) + chunk(b"IEND", b"")


def _one_pixel(tmp: Path) -> bytes:
    write_image(tmp / "one.png", np.zeros((1, 1, 3), np.float32))
    return (tmp / "one.png").read_bytes()


def _good_png(tmp: Path) -> bytes:
    write_image(tmp / "good.png", np.random.default_rng(1).random((24, 20, 3)).astype(np.float32))
    return (tmp / "good.png").read_bytes()


IMAGES: dict[str, tuple[Callable[[Path], bytes], str, tuple[str, ...]]] = {
    "truncated_png": (lambda t: _good_png(t)[:300], "a.png", ("a.png",)),
    "empty_png": (lambda t: b"", "a.png", ("empty file",)),
    "text_as_png": (lambda t: b"hello, I am not an image\n", "a.png", ("not a decodable image",)),
    "garbage_jpeg": (lambda t: b"\xff\xd8\xff\xe0" + bytes(64), "a.jpg", ("a.jpg",)),
    "one_pixel": (lambda t: _one_pixel(t), "a.png", ("smaller than scale",)),
    # decompression bombs are refused from the header, before any decoding, with the size and limit
    "bomb_beyond_opencv_limit": (lambda t: _png(100_000, 100_000), "a.png", ("100000x100000", "above the limit")),
    # below OpenCV's own limit: this one once took the process to 20 GB and the OOM killer
    "bomb_30000": (lambda t: _png(30_000, 30_000), "a.png", ("30000x30000", "900,000,000 pixels", "--max-pixels")),
}


@pytest.mark.parametrize("case", sorted(IMAGES))
def test_malformed_image(case: str, tmp_path: Path, work: Path, tiny: Path, capfd: pytest.CaptureFixture[str]) -> None:
    make, name, needles = IMAGES[case]
    (tmp_path / "set" / "HR").mkdir(parents=True)
    (tmp_path / "set" / "HR" / name).write_bytes(make(tmp_path))
    assert_fails_cleanly(["evaluate", tiny, "--data", tmp_path / "set", "--device", "cpu"], work, capfd, *needles,
                         watch=(tmp_path / "set",))


def test_png_declaring_a_huge_size_with_no_data(tmp_path: Path, work: Path, tiny: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "set" / "HR").mkdir(parents=True)
    (tmp_path / "set" / "HR" / "a.png").write_bytes(_png(20_000, 20_000))
    assert_fails_cleanly(["evaluate", tiny, "--data", tmp_path / "set", "--device", "cpu"], work, capfd, "a.png")


# ----------------------------------------------------------------------------- the real entry point


@pytest.mark.slow
@pytest.mark.parametrize("case", ["loop_forever", "constant_of_shape_1e12"])
def test_subprocess_entry_point(case: str, tmp_path: Path, tiny: Path, data: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    build, needles = MODELS[case]
    path = build(tmp_path / "m.onnx", tiny)
    before = listing(work, tmp_path)
    env = {**os.environ, "SREVAL_PROBE_TIMEOUT": "3"}
    proc = subprocess.run([sys.executable, "-m", "sreval.cli", "evaluate", str(path), "--data", str(data),
                           "--out", str(work / "out"), "--device", "cpu"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    text = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0 and "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert all(n.lower() in text.lower() for n in needles), text
    assert listing(work, tmp_path) == before
