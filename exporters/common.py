"""What every exporter shares: the architecture registry, safe checkpoint loading, ONNX export.

An architecture module (one per architecture) defines its nn.Module classes, written from the
paper and the documented key layout, and registers an `ArchSpec`. The zoo manifest refers to
architectures by name; `export_onnx` is the one export path for all of them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from sreval.errors import ModelError

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class ArchSpec:
    """An SR architecture the zoo can build.

    `build(scale)` returns a randomly initialised module whose `state_dict()` has exactly the
    official checkpoint's key layout. `value_range` is what the native module reads and writes
    (1.0 or 255.0); `channels` is "rgb" or "y"; `preupsampled` means it takes the bicubic-upscaled
    image (VDSR style). `fix_state_dict` maps an official checkpoint's raw dict onto our keys
    (e.g. strips a DataParallel `module.` prefix) before the strict load.
    """

    name: str
    build: Callable[[int], nn.Module]
    scales: tuple[int, ...] = (4,)
    value_range: float = 1.0
    channels: str = "rgb"
    preupsampled: bool = False
    gan_trained: bool = False
    paper: str = ""
    fix_state_dict: Callable[[StateDict], StateDict] | None = None
    notes: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.value_range not in (1.0, 255.0):
            raise ValueError(f"{self.name}: value_range must be 1.0 or 255.0")
        if self.channels not in ("rgb", "y"):
            raise ValueError(f"{self.name}: channels must be 'rgb' or 'y'")


ARCHS: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    if spec.name in ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    ARCHS[spec.name] = spec
    return spec


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def strip_prefix(prefix: str) -> Callable[[StateDict], StateDict]:
    def fix(sd: StateDict) -> StateDict:
        return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}

    return fix


def read_checkpoint(path: str | Path) -> StateDict:
    """Load a checkpoint as plain data (`weights_only=True`) and find its state dict.

    Accepts a bare state dict or the usual wrappers (`state_dict`, `params_ema`, `params`,
    `model`). A file that needs arbitrary unpickling (a whole pickled model) is refused with an
    explanation instead of being executed.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"{path.name}: refusing to unpickle: the checkpoint stores Python objects, not only "
            f"tensors (a whole pickled model?), and loading it would run code from the file; "
            f"extract its state_dict in a trusted environment first ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, io.UnsupportedOperation) as e:
        raise ModelError(f"{path.name}: not a readable PyTorch checkpoint ({e})") from None
    for key in ("params_ema", "params", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path.name}: no state dict of tensors found in the checkpoint")
    return {str(k): v for k, v in obj.items()}


def load_weights(module: nn.Module, spec: ArchSpec, state_dict: StateDict, source: str) -> None:
    """Strict load; a checkpoint of another architecture is refused with the keys that differ."""
    if spec.fix_state_dict is not None:
        state_dict = spec.fix_state_dict(state_dict)
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        raise ModelError(
            f"{source} is not a {spec.name} checkpoint: missing keys [{show(missing)}], "
            f"unexpected keys [{show(unexpected)}]"
        )
    bad = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise ModelError(
            f"{source} does not fit {spec.name}: {k} has shape {tuple(state_dict[k].shape)}, "
            f"expected {tuple(own[k].shape)} ({len(bad)} tensor(s) differ)"
        )
    module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
