"""SVHN cropped digits (``train_32x32.mat`` / ``test_32x32.mat``, MATLAB format).

Each file holds ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) with labels 1..10, where
10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datadistill.errors import DataError


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 from one ``.mat`` file."""
    import scipy.io  # here, not at the top: it adds 0.4 s to every command's start-up

    try:
        mat = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:  # scipy raises many types on bad input
        raise DataError(
            f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}); "
            "delete it and download it again."
        ) from e
    if "X" not in mat or "y" not in mat:
        raise DataError(
            f"{path} lacks the 'X' and 'y' arrays of SVHN; check that it is the right file."
        )
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8:  # the official files hold uint8; a cast would wrap other values
        raise DataError(
            f"{path} has images of dtype {x.dtype}, expected uint8 as in the official file; "
            "delete it and download it again."
        )
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(
            f"{path} has images of shape {x.shape}, expected (32, 32, 3, N); "
            "check that it is the 32x32 cropped-digits file."
        )
    labels = np.asarray(y).reshape(-1)
    if labels.shape[0] != x.shape[3]:
        raise DataError(
            f"{path} has {x.shape[3]} images but {labels.shape[0]} labels; "
            "delete it and download it again."
        )
    valid = np.issubdtype(labels.dtype, np.number) and bool(
        labels.size == 0
        or (labels.min() >= 0 and labels.max() <= 10 and np.all(labels == np.round(labels)))
    )
    if not valid:
        raise DataError(f"{path} has labels outside 0..10; delete it and download it again.")
    labels = labels.astype(np.int64)
    labels[labels == 10] = 0
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8, copy=False))
    return images, labels
