"""DatasetInfo: what a model and an artefact need to know about a dataset."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from datadistill.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset in model-input space.

    ``mean`` / ``std`` are per-channel, in [0, 1] pixel units: model inputs are
    ``(pixels - mean) / std``, then ZCA-whitened when ``zca`` is true.
    """

    name: str  # registry name, or "imagefolder:PATH" / "npz:PATH"
    num_classes: int  # K; labels are 0..K-1
    channels: int  # C: 1 (grayscale) or 3 (RGB)
    image_size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]  # (C,) per-channel pixel mean used for normalisation
    std: tuple[float, ...]  # (C,) per-channel pixel std used for normalisation
    class_names: tuple[str, ...]  # (K,) human-readable names, in label order
    allow_flip: bool  # whether horizontal flips keep the label (False for digits / characters)
    zca: bool = False  # whether model-input space is ZCA-whitened
    zca_eps: float | None = None  # the ZCA regulariser, when ``zca`` is true

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists); inverse of :meth:`from_dict`."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetInfo:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored (newer writers)."""
        required = [f.name for f in fields(cls) if f.name not in ("zca", "zca_eps")]
        missing = [k for k in required if k not in d]
        if missing:
            raise DataError(
                f"The dataset info is missing the key(s) {', '.join(missing)}; "
                "re-create the file with this version of datadistill."
            )
        try:
            eps = d.get("zca_eps")
            info = cls(
                name=str(d["name"]),
                num_classes=int(d["num_classes"]),
                channels=int(d["channels"]),
                image_size=(int(d["image_size"][0]), int(d["image_size"][1])),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                class_names=tuple(str(v) for v in d["class_names"]),
                allow_flip=bool(d["allow_flip"]),
                zca=bool(d.get("zca", False)),
                zca_eps=None if eps is None else float(eps),
            )
        except (TypeError, ValueError, IndexError, KeyError, OverflowError) as e:
            raise DataError(
                f"The dataset info has a malformed value ({e}); "
                "re-create the file with this version of datadistill."
            ) from e
        problem = info._problem()
        if problem:
            raise DataError(
                f"The dataset info is inconsistent ({problem}); re-create the file with this "
                "version of datadistill."
            )
        return info

    def _problem(self) -> str:
        """What makes these values impossible for a dataset ("" if nothing)."""
        if self.num_classes < 1 or self.channels < 1 or min(self.image_size) < 1:
            return (
                f"{self.num_classes} classes of {self.channels}-channel "
                f"{self.image_size[0]}x{self.image_size[1]} images"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            return f"{len(self.mean)} means and {len(self.std)} stds for {self.channels} channels"
        if not all(math.isfinite(v) for v in self.mean) or not all(
            math.isfinite(v) and v > 0 for v in self.std
        ):
            return (
                f"mean {list(self.mean)}, std {list(self.std)}: means must be finite and "
                "stds above 0"
            )
        if len(self.class_names) not in (0, self.num_classes):  # (none: classes by index)
            return f"{len(self.class_names)} class names for {self.num_classes} classes"
        return ""
