"""RawData: what a file-format reader hands to :func:`load_dataset`.

Readers return pixels as numpy arrays in their stored form (uint8 in [0, 255], or
float32 in [0, 1]) so that splitting and statistics run before the float copy is made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datadistill.errors import DataError


@dataclass(frozen=True)
class RawData:
    """Train and test images of one dataset, before splitting and normalisation."""

    train_x: np.ndarray  # (N, C, H, W) uint8 in [0, 255] or float32 in [0, 1]
    train_y: np.ndarray  # (N,) int64 in [0, K)
    test_x: np.ndarray  # (M, C, H, W), same dtype as train_x
    test_y: np.ndarray  # (M,) int64 in [0, K)
    class_names: tuple[str, ...]  # (K,)
    allow_flip: bool
    declared_mean: tuple[float, ...] | None = None  # published per-channel stats, if any
    declared_std: tuple[float, ...] | None = None
    source: str = ""  # the file or folder read, for error messages

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def digest(self) -> str:
        """``"sha256:"`` and the first 16 hex digits of a SHA-256 of the decoded images and
        labels of both splits (dtype, shape and bytes of each array, in the reader's
        order), before any split, cap or normalisation. A builtin dataset gives the same
        digest from any of its accepted layouts; an edited image or label gives another.
        User data: the stored form counts (uint8 or float pixels), and JPEG folders or
        resized images may decode to other pixels under another Pillow or libjpeg."""
        h = hashlib.sha256()
        # labels as int64 (a reader may keep int32); every array little-endian and
        # contiguous, so that the bytes are the same on any machine
        y_train, y_test = self.train_y.astype(np.int64), self.test_y.astype(np.int64)
        for a in (self.train_x, y_train, self.test_x, y_test):
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            h.update(f"{a.dtype.str}{a.shape};".encode())
            h.update(a)  # type: ignore[arg-type]  # (no copy) about 0.1 s for MNIST
        return "sha256:" + h.hexdigest()[:16]

    def validate(self) -> None:
        """Raise :class:`DataError` unless shapes, dtypes and labels are consistent."""
        where = self.source or "the dataset"
        x, t = self.train_x, self.test_x
        if x.ndim != 4 or t.ndim != 4 or x.shape[1:] != t.shape[1:]:
            raise DataError(
                f"Train and test images in {where} must both be (N, C, H, W) with the same "
                f"C, H, W; got {x.shape} and {t.shape}."
            )
        if x.shape[1] not in (1, 3):
            raise DataError(f"Images in {where} must have 1 or 3 channels; got {x.shape[1]}.")
        if 0 in x.shape[2:]:
            raise DataError(
                f"Images in {where} are {x.shape[2]}x{x.shape[3]} pixels; they need a height "
                "and a width of at least 1."
            )
        for name, imgs, labels in (("train", x, self.train_y), ("test", t, self.test_y)):
            if labels.shape != (imgs.shape[0],):
                raise DataError(
                    f"The {name} split of {where} has {imgs.shape[0]} images but "
                    f"labels of shape {labels.shape}; they must match one label per image."
                )
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(
                    f"The {name} labels of {where} must lie in 0..{self.num_classes - 1}; "
                    f"found {int(labels.min())}..{int(labels.max())}."
                )
        counts = np.bincount(self.train_y, minlength=self.num_classes)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise DataError(
                f"Class {int(empty[0])} ({self.class_names[int(empty[0])]!r}) of {where} has no "
                "training images; every label 0..K-1 needs at least one."
            )


def class_names_or_indices(names: Sequence[str] | None, k: int) -> tuple[str, ...]:
    """``names`` as a tuple, or ``("0", ..., "k-1")`` when none are given."""
    return tuple(str(n) for n in names) if names is not None else tuple(str(i) for i in range(k))
