"""Frozen evaluation protocols: everything that changes a reported number has a name here."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from datadistill.errors import ConfigError
from datadistill.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """How fresh networks are trained on a (distilled) set and tested."""

    name: str
    epochs: int  # passes over the distilled set
    lr: float = 0.01  # SGD learning rate (replaced by the learned lr when learned_lr is set)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at: float = 0.5  # lr x0.1 once this fraction of the epochs is done
    dsa: bool = False  # differentiable Siamese augmentation, per-image parameters
    seeds: int = 5  # fresh networks per reported number
    arch: str = "convnet"  # default architecture
    learned_lr: bool = False  # train with the artefact's learned lr when it has one
    full_epochs: int = 20  # epochs of the full-data reference network, by default raised
    # on a small training split to take at least evaluate.FULL_MIN_STEPS SGD steps
    description: str = ""

    def __post_init__(self) -> None:
        """Checked on construction, so a protocol built by hand (``Protocol(...)``,
        ``dataclasses.replace``) fails in one sentence before any network trains."""

        def need(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(
                    f"The {name!r} field of protocol {self.name!r} must be {expected}. "
                    f"Got {getattr(self, name)!r} instead."
                )

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need("name", isinstance(self.name, str) and bool(self.name.strip()), "a non-empty str")
        for name in ("epochs", "batch_size", "seeds", "full_epochs"):
            v = getattr(self, name)
            need(name, isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1")
        need("lr", number(self.lr) and self.lr > 0, "a number > 0")
        need("momentum", number(self.momentum) and 0 <= self.momentum < 1, "a number in [0, 1)")
        need("weight_decay", number(self.weight_decay) and self.weight_decay >= 0, "a number >= 0")
        need("decay_at", number(self.decay_at) and 0 <= self.decay_at <= 1, "a number in [0, 1]")
        for name in ("dsa", "learned_lr"):
            need(name, isinstance(getattr(self, name), bool), "True or False")
        need("arch", isinstance(self.arch, str) and bool(self.arch), "a model name")
        need("description", isinstance(self.description, str), "a str")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def _add(p: Protocol) -> None:
    PROTOCOLS.register(p.name, description=p.description)(p)


_add(Protocol("dc", epochs=300, description="DC/DM: SGD 0.01, 300 epochs, no augmentation"))
_add(Protocol("dsa", epochs=1000, dsa=True, description="DSA/DM: SGD 0.01, 1000 epochs, DSA"))
_add(
    Protocol(
        "mtt",
        epochs=1000,
        dsa=True,
        learned_lr=True,
        description="MTT/DATM: 1000 epochs, DSA, the learned synthetic lr",
    )
)
_add(
    Protocol(
        "fast",
        epochs=100,
        seeds=2,
        full_epochs=3,
        description="CPU smoke runs (100 epochs, 2 seeds); validation during distillation "
        "trains one network a check with its budget",
    )
)


def get_protocol(name: str | Protocol) -> Protocol:
    return name if isinstance(name, Protocol) else PROTOCOLS.get(name)


def validation_protocol(expected: str | Protocol) -> Protocol:
    """What validation during distillation trains with: the ``fast`` protocol's budget
    (100 epochs; one network per check, not its 2 seeds) with the training recipe of
    ``expected``, the protocol the method's sets are made for (its DSA and learned lr), so
    that best-val selection judges a set the way it will be evaluated."""
    fast, exp = get_protocol("fast"), get_protocol(expected)
    if not (exp.dsa or exp.learned_lr):
        return fast
    return dataclasses.replace(
        fast,
        name=f"fast-{exp.name}",
        dsa=exp.dsa,
        learned_lr=exp.learned_lr,
        description=f"validation during distillation: fast's budget, {exp.name}'s recipe",
    )
