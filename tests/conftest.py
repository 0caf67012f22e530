"""Shared fixtures. Real images come from the shared assets (env SREVAL_ASSETS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sreval.data import assets_dir


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
