"""Differentiable Siamese augmentation (DSA): sample parameters per class, apply them alike
to the real and the synthetic batch of that class.

Public names: :class:`DSA`, :class:`DSAConfig`, :class:`DSAParams`, ``AUGMENTATIONS`` (the
registry of the six families: color, crop, cutout, flip, scale, rotate),
:func:`one_family_per_batch` (the reference's single mode on a training batch).
"""

from datadistill.augment.config import DSAConfig
from datadistill.augment.dsa import DSA, one_family_per_batch
from datadistill.augment.ops import AUGMENTATIONS
from datadistill.augment.params import DSAParams

__all__ = ["AUGMENTATIONS", "DSA", "DSAConfig", "DSAParams", "one_family_per_batch"]
