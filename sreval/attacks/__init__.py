"""Adversarial attacks on SR models. Each attack is a callable object in the torchattacks
shape (`x_adv = IFGSM(model, eps=8/255, steps=50)(x)`) plus a runner over a dataset. The
registry of attacks that the CLI, the sweep and the report read is `sreval.commands.ATTACKS`."""

from sreval.attacks.basic import APGD, IFGSM, MIFGSM, PGD, GradientAttack, run_basic
from sreval.config import BasicConfig, LoopOptions, parse_alpha
from sreval.attacks.partial import PartialIFGSM, run_partial
from sreval.attacks.targeted import TargetedIFGSM, run_targeted
from sreval.attacks.universal import Universal, run_universal

__all__ = ["GradientAttack", "IFGSM", "PGD", "APGD", "MIFGSM", "LoopOptions", "BasicConfig", "parse_alpha",
           "run_basic",
           "Universal", "run_universal", "PartialIFGSM", "run_partial", "TargetedIFGSM", "run_targeted"]
