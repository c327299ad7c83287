"""DatasetInfo: what a model and an artefact need to know about a dataset."""

from __future__ import annotations

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
            return cls(
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
        except (TypeError, ValueError, IndexError, KeyError) as e:
            raise DataError(
                f"The dataset info has a malformed value ({e}); "
                "re-create the file with this version of datadistill."
            ) from e
