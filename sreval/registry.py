"""`ATTACKS`, the one registry of what sreval can run as an attack: the CLI (`sreval attacks`,
`sreval run NAME`), the sweep (`--attacks`) and the HTML report read it.

Pure Python: an entry names its attack object by import path ("module:Class"), imported only
when it runs, so that listing the registry and `--help` never load torch. Adding an attack is
one file (a `GradientAttack` subclass under `sreval/attacks/`) and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from sreval.errors import ConfigError


@dataclass(frozen=True)
class AttackEntry:
    """One entry of the attack registry.

    `what` names it in tables and the report; `cli` is the command that runs it ("run": the
    generic `sreval run NAME`, for an entry that is only an attack object). `attack` is its
    attack object: a class, or its import path "package.module:Class". The paper's jobs run
    as sweep cells through `sreval.commands.cell_runner`."""

    what: str
    cli: str = "run"
    attack: str | type | None = None
    descend: bool = False  # its loss goes down (a targeted attack), for the evidence checks
    per_model: bool = True  # one cell per model (transfer: one cell for all models)
    dataset: bool = True  # runs over the sweep's datasets (targeted: over its own image pair)

    @property
    def attack_name(self) -> str | None:
        """The attack object's class name, without importing it."""
        if self.attack is None or isinstance(self.attack, type):
            return None if self.attack is None else self.attack.__name__
        return self.attack.rpartition(":")[2]

    def attack_class(self) -> Any:
        """The attack object's class (imported now, where given by its path)."""
        if self.attack is None or isinstance(self.attack, type):
            return self.attack
        module, sep, name = self.attack.partition(":")
        if not sep:
            raise ConfigError(f"attack {self.attack!r}: write it as package.module:Class")
        return getattr(importlib.import_module(module), name)


ATTACKS: dict[str, AttackEntry] = {
    "clean": AttackEntry("clean SR quality against HR", cli="evaluate"),
    "basic": AttackEntry("basic attack, I-FGSM", cli="attack", attack="sreval.attacks.basic:IFGSM"),
    "universal": AttackEntry("universal perturbation", cli="universal", attack="sreval.attacks.universal:Universal"),
    "partial": AttackEntry("partial attack on the central half", cli="partial",
                           attack="sreval.attacks.partial:PartialIFGSM"),
    "targeted": AttackEntry("targeted attack on the foreman pair", cli="targeted",
                            attack="sreval.attacks.targeted:TargetedIFGSM", descend=True, dataset=False),
    "transfer": AttackEntry("transferability between all models", cli="transfer", per_model=False),
    "index": AttackEntry("robustness index at the smallest budget", cli="index"),
    "defense": AttackEntry("basic attack against the defenses", cli="attack --defense"),
    # attack objects with no command of their own: `sreval run NAME`, and `--attacks NAME` in sweeps
    "pgd": AttackEntry("PGD with random restarts (Madry et al.)", attack="sreval.attacks.basic:PGD"),
    "apgd": AttackEntry("APGD, adaptive step size (Croce & Hein)", attack="sreval.attacks.basic:APGD"),
    "mifgsm": AttackEntry("momentum I-FGSM (Dong et al.)", attack="sreval.attacks.basic:MIFGSM"),
}


def attack_entry(name: str) -> AttackEntry:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}: choose from {', '.join(ATTACKS)}")
    return ATTACKS[name]
