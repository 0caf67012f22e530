"""The house: no import cycles, no function-local imports (except optional dependencies),
every module importable on its own, one top-level package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# where each package's source lives in the repository (the wheel maps the two folders in)
SOURCES = {"sreval": ROOT / "sreval", "sreval.exporters": ROOT / "exporters", "sreval.model_zoo": ROOT / "model_zoo"}
OPTIONAL = {"onnxruntime", "ray", "spandrel", "safetensors"}  # extras: imported where used, with a message when missing
# The CLI imports the library when a command runs, so that `--help` never loads these.
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "onnx2torch", "spandrel", "matplotlib", "cv2", "numpy")
LAZY = "sreval.cli"


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for f in sorted(folder.rglob("*.py")):
            if "__pycache__" in f.parts or (package == "sreval" and f.is_relative_to(ROOT / "sreval" / "exporters")):
                continue
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = f
    return found


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def top_level_imports(path: Path) -> set[str]:
    """Our modules a module imports when it is imported (TYPE_CHECKING blocks excluded)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.If) and _type_checking(n))]
    for node in body:
        for n in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names if a.name.startswith("sreval")}
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("sreval"):
                out.add(n.module)
                out |= {f"{n.module}.{a.name}" for a in n.names}
    return out


def test_the_import_graph_has_no_cycles() -> None:
    mods = modules()
    graph = {m: {d for d in top_level_imports(p) if d in mods and d != m} for m, p in mods.items()}
    # a package's __init__ importing its own submodules is how packages are made; anything
    # else that leads back to a module is a cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d.startswith(m + ".") or m == "sreval":
                continue
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("name", sorted(m for m in modules() if not m.startswith(LAZY)))
def test_no_function_local_imports(name: str) -> None:
    """Imports sit at the top of a module (a local import hides a cycle or a slow import);
    only the optional extras are imported where they are used, and the CLI's commands import
    the library when they run."""
    tree = ast.parse(modules()[name].read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.Import):
                names = [a.name.split(".")[0] for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                names = [(n.module or "").split(".")[0]]
            else:
                continue
            assert set(names) <= OPTIONAL, f"{name}:{n.lineno}: function-local import of {', '.join(names)}"


def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh interpreter, in one run: a module that only works after another
    was imported first fails here."""
    script = ("import importlib, sys\n"
              f"for m in {sorted(modules())!r}:\n"
              "    for k in [k for k in sys.modules if k == 'sreval' or k.startswith('sreval.')]:\n"
              "        del sys.modules[k]\n"
              "    importlib.import_module(m)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


def test_only_sreval_is_a_top_level_package() -> None:
    """Nothing imports the repository's folders by their own names: in a wheel they exist only
    as sreval.exporters and sreval.model_zoo."""
    files = {**modules(), **{str(f.relative_to(ROOT)): f for d in ("tests", "benchmarks") for f in (ROOT / d).glob("*.py")}}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                bad = [a.name for a in n.names if a.name.split(".")[0] in ("exporters", "model_zoo")]
            elif isinstance(n, ast.ImportFrom):
                bad = [n.module] if (n.module or "").split(".")[0] in ("exporters", "model_zoo") and n.level == 0 else []
            else:
                continue
            assert not bad, f"{name}:{n.lineno} imports {bad}"


def test_the_cli_imports_no_heavy_module() -> None:
    """`sreval --help` answers at once: importing the CLI (and the `sreval` package, whose
    names resolve on first use) loads none of torch, onnxruntime, spandrel, matplotlib, ..."""
    script = ("import sys, sreval.cli, sreval, sreval.manifest\n"
              f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"importing sreval.cli loads {r.stdout.strip()}"


def test_every_public_name_resolves() -> None:
    """The package's lazily resolved names all exist where `sreval.__init__` says."""
    import sreval

    for name in sreval.__all__:
        assert getattr(sreval, name) is not None, name


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip().count("\n") == 0 and "no CUDA device" in r.stdout, r.stdout + r.stderr
