"""The real package: a wheel built from the repository, installed (not editable) into a fresh
virtual environment, used from a folder outside the repository as a new user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real exports / real weights / a fresh venv: not in the fast lane

ROOT = Path(__file__).resolve().parent.parent


def readme_block(tag: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {tag} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert m, f"README.md has no {tag} block"
    return m.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path_factory.mktemp("build"))
    assert r.returncode == 0, r.stderr[-2000:]
    (found,) = out.glob("sreval-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; the dependencies (torch, onnx, ...) come from this test's
    environment through a .pth line, so nothing is downloaded. That line adds a folder to the
    path without running its .pth files, so this environment's own (editable) sreval stays
    out of sight."""
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
    py = env / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "sreval-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env


def run_in(venv: Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SREVAL_ZOO", "SREVAL_MANIFEST")}
    full.update(env, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=full, timeout=900)


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"sreval"}
    assert "sreval/model_zoo/manifest.json" in names and "sreval/exporters/common.py" in names
    assert not [n for n in names if n.endswith(".onnx")]


def test_installed_wheel_works_outside_the_repository(venv: Path, tmp_path: Path) -> None:
    env = {"SREVAL_CACHE": str(tmp_path / "cache")}
    where = run_in(venv, ["python", "-c", "import sreval; print(sreval.__file__)"], tmp_path, env)
    assert where.returncode == 0, where.stderr
    assert str(venv) in where.stdout, f"not the installed package: {where.stdout}"

    r = run_in(venv, ["sreval", "zoo", "list"], tmp_path, env)
    assert r.returncode == 0 and "bicubic" in r.stdout, r.stdout + r.stderr
    r = run_in(venv, ["sreval", "zoo", "build", "bicubic"], tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "cache" / "zoo" / "bicubic.onnx").is_file()  # the user cache, never site-packages
    assert not list(venv.rglob("*.onnx"))

    r = run_in(venv, ["sreval", "demo", "--models", "bicubic", "--crop", "16", "--steps", "2", "--out",
                      str(tmp_path / "demo")], tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "demo" / "report.html").is_file()

    # the README's Python example, as written; bicubic is built on first use, with a note
    fresh = {**env, "SREVAL_CACHE": str(tmp_path / "cache2")}
    (tmp_path / "example.py").write_text(readme_block("ci:example"))
    r = run_in(venv, ["python", "example.py"], tmp_path, fresh)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "cache2" / "zoo" / "bicubic.onnx").is_file()
    assert "building zoo model bicubic on first use" in r.stderr
