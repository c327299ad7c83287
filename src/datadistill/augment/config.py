"""DSAConfig: which DSA families to apply and how strongly (defaults: Zhao & Bilen 2021)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from datadistill.augment.ops import AUGMENTATIONS
from datadistill.errors import ConfigError, check

MODES = ("single", "multiple")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """``"color_crop_flip"`` -> ``("color", "crop", "flip")``; ``""`` or ``"none"`` -> ``()``.

    Raises:
        UnknownNameError: a family that is not registered (the message lists the valid ones).
        ConfigError: a family named twice.
    """
    text = strategy.strip().lower()
    if text in ("", "none"):
        return ()
    families = tuple(AUGMENTATIONS.canonical(part) for part in text.split("_"))
    if len(set(families)) != len(families):
        raise ConfigError(
            f"The 'strategy' parameter of DSAConfig names a family twice; got {strategy!r}."
        )
    return families


def _check_range(name: str, value: float, low: float, high: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    check(
        ok and low <= value <= high,
        f"The {name!r} parameter of DSAConfig must be a number in [{low:g}, {high:g}]; "
        f"got {value!r}.",
    )


@dataclass(frozen=True)
class DSAConfig:
    """Differentiable Siamese augmentation settings (validated at construction).

    The defaults are the paper's and the reference code's; use :meth:`without_flip` for
    digits, where mirroring changes the class.
    """

    # families separated by "_", applied in this order in "multiple" mode; "" = none
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    # "single": each group gets ONE family drawn uniformly (the reference default);
    # "multiple": every family, in order
    mode: str = "single"
    brightness: float = 1.0  # additive shift (u - 0.5) * brightness, u ~ U[0, 1)
    saturation: float = 2.0  # saturation factor u * saturation
    contrast: float = 0.5  # contrast factor u + contrast
    crop: float = 0.125  # maximum translation, as a fraction of the side
    cutout: float = 0.5  # side of the zeroed square, as a fraction of the side
    flip: float = 0.5  # probability of a left-right mirror
    scale: float = 1.2  # sx, sy ~ U(1 / scale, scale) independently
    rotate: float = 15.0  # angle ~ U(-rotate, rotate) degrees

    def __post_init__(self) -> None:
        check(
            isinstance(self.strategy, str),
            f"The 'strategy' parameter of DSAConfig must be a str; got {self.strategy!r}.",
        )
        parse_strategy(self.strategy)
        check(
            isinstance(self.mode, str) and self.mode in MODES,
            f"The 'mode' parameter of DSAConfig must be one of 'single', 'multiple'; "
            f"got {self.mode!r}.",
        )
        inf = math.inf
        _check_range("brightness", self.brightness, 0, inf)
        _check_range("saturation", self.saturation, 0, inf)
        _check_range("contrast", self.contrast, 0, inf)
        _check_range("crop", self.crop, 0, 1)
        _check_range("cutout", self.cutout, 0, 1)
        _check_range("flip", self.flip, 0, 1)
        _check_range("scale", self.scale, 1, inf)
        _check_range("rotate", self.rotate, 0, 180)

    @property
    def families(self) -> tuple[str, ...]:
        """The strategy's families, in order."""
        return parse_strategy(self.strategy)

    def for_dataset(self, allow_flip: bool) -> DSAConfig:
        """These settings, without ``flip`` where the dataset forbids mirroring (digits)."""
        return self if allow_flip else self.without_flip()

    def without_flip(self) -> DSAConfig:
        """The same settings with ``flip`` removed from the strategy (digit datasets)."""
        return replace(self, strategy="_".join(f for f in self.families if f != "flip"))
