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
"""

from sreval.attacks.basic import APGD, IFGSM, MIFGSM, PGD, GradientAttack, LoopOptions
from sreval.attacks.partial import PartialIFGSM
from sreval.attacks.targeted import TargetedIFGSM
from sreval.attacks.universal import Universal
from sreval.commands import (ATTACKS, AttackEntry, attack, evaluate, export, index, inspect, load_model, partial,
                             run_attack, targeted, transfer, universal)
from sreval.conventions import Conventions
from sreval.errors import ConfigError, DataError, ModelError, ParityError, SrevalError, UnsupportedOperatorError
from sreval.metrics import psnr, ssim
from sreval.model import LoadedModel
from sreval.sweeps import sweep

__all__ = [
    "load_model", "LoadedModel", "Conventions",
    "GradientAttack", "IFGSM", "PGD", "APGD", "MIFGSM", "Universal", "PartialIFGSM", "TargetedIFGSM", "LoopOptions",
    "evaluate", "attack", "universal", "partial", "targeted", "transfer", "index", "sweep", "inspect", "run_attack",
    "export",
    "ATTACKS", "AttackEntry", "psnr", "ssim",
    "SrevalError", "ConfigError", "DataError", "ModelError", "ParityError", "UnsupportedOperatorError",
]
