"""sreval: adversarial robustness of super-resolution models (any ONNX file or zoo name).

The public API, in the shape the CLI uses it::

    import sreval

    model = sreval.load_model("carn-m")            # an nn.Module on RGB NCHW [0, 1]
    x_adv = sreval.IFGSM(model, eps=8/255, steps=50)(lr, hr)
    report = sreval.attack("carn-m", "Set5", alpha="8/255")   # what `sreval attack` writes
    sreval.psnr(model(x_adv), model(lr), shave=model.scale)   # batches give one value per image

Every command of the CLI is one function here (`evaluate`, `attack`, `universal`, `partial`,
`targeted`, `transfer`, `index`, `sweep`, `inspect`), with the CLI's defaults; each returns the
report the CLI writes and writes it only when given `out=`. The attack objects take a loaded
model or any `nn.Module` on RGB NCHW [0, 1]. `ATTACKS` is the registry the CLI, the sweep and
the report read.

The names are imported on first use (PEP 562), so `import sreval.cli` and `sreval --help` do
not load torch, onnxruntime or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_HOMES = {
    **dict.fromkeys(("GradientAttack", "IFGSM", "PGD", "APGD", "MIFGSM"), "sreval.attacks.basic"),
    "PartialIFGSM": "sreval.attacks.partial",
    "TargetedIFGSM": "sreval.attacks.targeted",
    "Universal": "sreval.attacks.universal",
    **dict.fromkeys(("load_model", "attack", "evaluate", "export", "index", "inspect", "partial", "run_attack",
                     "targeted", "transfer", "universal"), "sreval.commands"),
    "LoopOptions": "sreval.config",
    "Conventions": "sreval.conventions",
    **dict.fromkeys(("ConfigError", "DataError", "ModelError", "ParityError", "SrevalError",
                     "UnsupportedOperatorError"), "sreval.errors"),
    **dict.fromkeys(("psnr", "ssim"), "sreval.metrics"),
    "LoadedModel": "sreval.model",
    **dict.fromkeys(("ATTACKS", "AttackEntry"), "sreval.registry"),
    "sweep": "sreval.sweeps",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sreval' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from sreval.attacks.basic import APGD, IFGSM, MIFGSM, PGD, GradientAttack
    from sreval.attacks.partial import PartialIFGSM
    from sreval.attacks.targeted import TargetedIFGSM
    from sreval.attacks.universal import Universal
    from sreval.commands import (attack, evaluate, export, index, inspect, load_model, partial, run_attack, targeted,
                                 transfer, universal)
    from sreval.config import LoopOptions
    from sreval.conventions import Conventions
    from sreval.errors import ConfigError, DataError, ModelError, ParityError, SrevalError, UnsupportedOperatorError
    from sreval.metrics import psnr, ssim
    from sreval.model import LoadedModel
    from sreval.registry import ATTACKS, AttackEntry
    from sreval.sweeps import sweep
