"""The memory budget: the most memory one untrusted input may make sreval allocate.

Every step that turns bytes from a file into memory estimates what it will allocate and
checks the estimate here *before* allocating: a checkpoint's tensors and zip records, the
architecture spandrel would build from it, an ONNX file and its external data, a dataset's
decoded images (held together for the run), and a model run (first in a child process under
the limit, then per image from the memory it measured there). A refusal is one line naming
what, how much and the limit.

The budget is `sreval --max-memory SIZE` / SREVAL_MAX_MEMORY (bytes, or with a unit: 800M,
1.5G, 2GiB), else half of the memory the machine has available, at most DEFAULT_CAP: real SR
work (the zoo on BSD100) stays far below that, and sreval's own baseline (torch, onnxruntime:
about 0.7 GB) plus the budget stays within 2 GB. This module imports nothing heavy.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from sreval.errors import ConfigError, ModelError, SrevalError

GIB = 1 << 30
DEFAULT_CAP = GIB
HINT = "(raise it with --max-memory or SREVAL_MAX_MEMORY)"  # the end of every refusal
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": GIB, "t": 10**12, "tb": 10**12, "tib": 1 << 40}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE)


class MemoryBudgetError(SrevalError):
    """An untrusted input would need more memory than the budget allows."""


def parse_size(text: str, name: str = "SREVAL_MAX_MEMORY") -> int:
    """Bytes from '1073741824', '800M', '1.5G', '2GiB' (k/M/G/T decimal, KiB/MiB/GiB binary)."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise ConfigError(f"{name} must be a size such as 800M or 2G, got {text!r}")
    value = float(m.group(1)) * _UNITS[unit]
    if not (math.isfinite(value) and value >= 10**6):
        raise ConfigError(f"{name} must be a finite size of at least 1M, got {text!r}")
    return int(value)


def available() -> int | None:
    """MemAvailable from /proc/meminfo (bytes), None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def budget() -> int:
    """The memory budget in bytes (see the module docstring)."""
    text = os.environ.get("SREVAL_MAX_MEMORY", "").strip()
    if text:
        return parse_size(text)
    free = available()
    return DEFAULT_CAP if free is None else max(64 << 20, min(DEFAULT_CAP, free // 2))


def human(n: float) -> str:
    """A byte count for people: '3.2 GB', '512 MB'."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def require(nbytes: float, what: str) -> None:
    """Refuse (MemoryBudgetError) when `what` would allocate more than the budget."""
    limit = budget()
    if nbytes > limit:
        raise MemoryBudgetError(f"{what} needs about {human(nbytes)}, over the memory budget of {human(limit)} {HINT}")


def read_limited(path: Path, what: str) -> bytes:
    """A regular file's bytes (a model, a checkpoint), its size checked against the budget
    before reading: ModelError for a missing, special or unreadable file."""
    if not path.is_file():
        raise ModelError(f"{what} not found: {path}" if not path.exists() else f"{what} is not a regular file: {path}")
    try:
        with open(path, "rb") as f:
            require(os.fstat(f.fileno()).st_size, f"{path.name}: reading the {what}")
            return f.read()
    except OSError as e:
        raise ModelError(f"{path.name}: cannot read the {what} ({e.strerror or e})") from None


class Ledger:
    """Memory held together for a while (a dataset's images): each addition is checked with
    what is held already. A fresh ledger checks one allocation alone."""

    def __init__(self, what: str):
        self.what, self.held = what, 0

    def add(self, nbytes: float, transient: float = 0.0) -> None:
        """Hold `nbytes` more; `transient` is needed only while it is made (a decode)."""
        require(self.held + max(nbytes, transient), self.what)
        self.held += int(nbytes)


__all__ = ["MemoryBudgetError", "parse_size", "available", "budget", "human", "require", "read_limited", "Ledger", "DEFAULT_CAP", "HINT"]
