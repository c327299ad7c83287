"""Sampled DSA parameters: one set per group, shared by every image of the group."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class DSAParams:
    """The random values of one DSA call, for G groups (leading dim G everywhere).

    Every family's values are present whatever the strategy (families not in
    ``families`` are simply not applied). Values are stored in their natural units, so a
    hand-built ``DSAParams`` is easy to read; the two integer-valued families (crop and
    cutout) store U[0, 1) draws that become integer offsets at apply time, for the actual
    image size, exactly distributed as the reference's ``randint``.

    Attributes:
        families: the families of the strategy, in application order.
        choice: (G,) int64 index into ``families`` (``"single"`` mode: group g gets only
            ``families[choice[g]]``), or ``None`` (``"multiple"`` mode: all, in order).
        brightness: (G,) additive shift, (u - 0.5) * config.brightness.
        saturation: (G,) factor on the deviation from the channel mean, u * config.saturation.
        contrast: (G,) factor on the deviation from the image mean, u + config.contrast.
        crop: (G, 2) U[0, 1) draws for the (row, column) translation.
        crop_ratio: the maximum translation, as a fraction of the side.
        cutout: (G, 2) U[0, 1) draws for the (row, column) centre of the cut square.
        cutout_ratio: the side of the cut square, as a fraction of the image side.
        flip: (G,) bool, whether to mirror left-right.
        scale: (G, 2) factors (sx, sy) of the sampling grid.
        rotate: (G,) angle in radians.
    """

    families: tuple[str, ...]
    choice: Tensor | None
    brightness: Tensor
    saturation: Tensor
    contrast: Tensor
    crop: Tensor
    crop_ratio: float
    cutout: Tensor
    cutout_ratio: float
    flip: Tensor
    scale: Tensor
    rotate: Tensor

    @property
    def groups(self) -> int:
        """G, the number of parameter sets."""
        return int(self.flip.shape[0])

    def _tensor_fields(self) -> dict[str, Tensor]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                out[f.name] = value
        return out

    def to(self, device: torch.device | str | None) -> DSAParams:
        """The same parameters on ``device`` (``choice`` stays on the CPU: it only steers
        which family runs on which groups)."""
        if device is None:
            return self
        moved: dict[str, Any] = {
            k: v.to(device) for k, v in self._tensor_fields().items() if k != "choice"
        }
        return replace(self, **moved)

    def take(self, index: Tensor | slice) -> DSAParams:
        """The parameters of groups ``index`` ((G',) int64, in that order, or a slice of
        consecutive groups, such as a class group)."""
        taken: dict[str, Any] = {}
        for k, v in self._tensor_fields().items():
            taken[k] = v[index if isinstance(index, slice) else index.to(v.device)]
        return replace(self, **taken)
