"""The first run of a model file, in a child process under the memory budget.

A graph can allocate at run time far beyond what its file's size suggests (a ConstantOfShape
to 3 x 16000 x 16000, a fixed 1024 x 1024 input with a x16 output), and onnxruntime can crash
on a hostile graph (SIGFPE, SIGSEGV). Before sreval opens an onnxruntime session of a file in
its own process, `trial` opens one in a child whose data segment may grow by the memory budget
only (RLIMIT_DATA, plus ORT_OVERHEAD for onnxruntime itself), and runs it on small inputs (free
axes 24, then 48, batch 1; a fixed shape as it is). What the second run grew by, per input
element, bounds every later onnxruntime run on an image (measured: 4.4-4.9 kB per element for
CARN-M and RRDB x4, against 3.9 kB really grown at 144 x 180). The child needs only
onnxruntime and numpy (about 0.3 s to start). A run over the budget, or a crash, ends in one
line; any other failure is left to sreval's own probes, which say what is wrong with the
model. One trial per file content and budget per process.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sreval import memory
from sreval.errors import ModelError

TRIAL_SIDE = 24
ORT_OVERHEAD = 64 << 20  # onnxruntime's own session (arena, thread pool) on top of the budget
_PASSED: dict[tuple[str, int], float | None] = {}
_CODE = "import sys; from sreval.trial import _child; sys.exit(_child())"
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int32)": "int32",
           "tensor(int64)": "int64", "tensor(bfloat16)": "float32"}


def trial(model: bytes, name: str, key: str, timeout: float) -> float | None:
    """Run the serialized model once in a capped child; MemoryBudgetError when the run needs
    more than the budget, ModelError when onnxruntime crashes. Returns the memory a run takes
    per input element (bytes, measured between a 24 and a 48 input; None for a fixed-size
    input or when not measured), which bounds the runs on real images (`OrtCore`). `key`
    names the model's content: one trial per key and budget per process."""
    budget = memory.budget()
    if (key, budget) in _PASSED:
        return _PASSED[key, budget]
    fd, result = tempfile.mkstemp(prefix="sreval-trial-", suffix=".json")
    os.close(fd)
    try:
        r = subprocess.run([sys.executable, "-c", _CODE, str(budget), result], input=model, capture_output=True,
                           timeout=timeout, env={**os.environ, "PYTHONFAULTHANDLER": ""})
        answer = _answer(Path(result))
    except subprocess.TimeoutExpired:
        return None  # a slow model: sreval's own probes have their time limit
    finally:
        Path(result).unlink(missing_ok=True)
    if answer.get("outcome") == "memory" or (r.returncode < 0 and b"bad_alloc" in r.stderr):
        raise memory.MemoryBudgetError(
            f"{name}: running the model on a {answer.get('shape', 'small')} input needs more than the memory budget "
            f"of {memory.human(budget)} {memory.HINT}")
    if r.returncode < 0:
        sig = signal.Signals(-r.returncode).name
        raise ModelError(f"{name}: onnxruntime crashed running the model ({sig})"
                         + (": killed, out of memory?" if sig == "SIGKILL" else ""))
    per_element = answer.get("per_element")
    _PASSED[key, budget] = float(per_element) if isinstance(per_element, (int, float)) else None
    return _PASSED[key, budget]


def _answer(result: Path) -> dict[str, Any]:
    """The child's answer (empty where it wrote none: it crashed or was killed)."""
    try:
        value = json.loads(result.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


class _Skip(Exception):
    pass


def _child() -> int:
    """The child: argv[1] the budget in bytes, argv[2] the file for its answer (JSON), the
    model on stdin."""
    import onnxruntime as ort

    model, budget = sys.stdin.buffer.read(), int(sys.argv[1])
    _cap(budget)
    shape: list[int] = []
    answer: dict[str, Any] = {}
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        del model
        growth, sizes = [], []
        for side in (TRIAL_SIDE, 2 * TRIAL_SIDE):
            feeds, free = {}, False
            for i in sess.get_inputs():
                shape = [d if isinstance(d, int) and d > 0 else (1 if k == 0 else side) for k, d in enumerate(i.shape)]
                free = free or any(not (isinstance(d, int) and d > 0) for d in i.shape[1:])
                if 8 * math.prod(shape) > budget:  # an input too large: sreval's own checks name it
                    raise _Skip
                feeds[i.name] = np.random.default_rng(0).random(shape).astype(_DTYPES.get(i.type, "float32"))
            before = _resident(reset_peak=True)
            outs = sess.run(None, feeds)
            growth.append(_resident(peak=True) - before)
            sizes.append(sum(a.size for a in feeds.values()))
            if not free:
                break
        if len(growth) == 2:
            # what the larger run needed beyond the smaller one's (onnxruntime's arena keeps
            # the smaller run's blocks), per element; at least the outputs' own size
            out_bytes = sum(getattr(o, "nbytes", 0) for o in outs)
            answer["per_element"] = max(growth[1] / (sizes[1] - sizes[0]), out_bytes / sizes[1])
        outcome = "ok"
    except _Skip:
        outcome = "skipped"
    except MemoryError:
        outcome = "memory"
    except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
        text = str(e)
        outcome = "memory" if ("allocat" in text.lower() or "bad_alloc" in text) else "error"
    Path(sys.argv[2]).write_text(json.dumps({**answer, "outcome": outcome, "shape": "x".join(map(str, shape)) or "small"}))
    return 0


def _resident(reset_peak: bool = False, peak: bool = False) -> int:
    """This process's resident memory (VmRSS), or its peak (VmHWM) since the last reset (Linux
    resets it when "5" is written to /proc/self/clear_refs)."""
    if reset_peak:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    key = "VmHWM:" if peak else "VmRSS:"
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _cap(budget: int) -> None:
    """Let the data segment grow by `budget` beyond what the interpreter holds now (and
    onnxruntime's own overhead)."""
    with open("/proc/self/status") as f:
        held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmData:"))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    held += ORT_OVERHEAD
    limit = held + budget if hard == resource.RLIM_INFINITY else min(held + budget, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


__all__ = ["trial", "TRIAL_SIDE"]
