"""scikit-learn's bundled 8x8 digits (1797 images, values 0..16): no download needed.

The set has no official test split, so a stratified 20% is carved with a fixed seed.
"""

from __future__ import annotations

import numpy as np

from datadistill.data.raw import RawData
from datadistill.data.splits import TEST_FRACTION, TEST_SEED, split_off


def read_digits() -> RawData:
    """The digits as float32 pixels in [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]  # (1797, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = split_off(y, TEST_FRACTION, 10, TEST_SEED, "test")
    return RawData(
        train_x=x[train],
        train_y=y[train],
        test_x=x[test],
        test_y=y[test],
        class_names=tuple(str(i) for i in range(10)),
        allow_flip=False,
        source="scikit-learn digits",
    )
