"""Per-channel pixel statistics and the conversion of pixels to model-input space."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

NORMALIZATIONS = ("train", "declared", "none")
_CHUNK = 8192  # images per block for float statistics
_MIN_STD = 1e-8  # a constant channel is left unscaled instead of divided by ~0


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std, in [0, 1] pixel units, of images
    ``x`` (N, C, H, W), uint8 in [0, 255] or float in [0, 1].

    uint8 statistics are exact (from a 256-bin histogram); float ones use float64 sums.
    """
    n, c = x.shape[0], x.shape[1]
    if n == 0:
        return (0.0,) * c, (1.0,) * c
    if x.dtype == np.uint8:
        values = np.arange(256, dtype=np.float64) / 255.0
        means, stds = [], []
        for ch in range(c):
            hist = np.bincount(x[:, ch].ravel(), minlength=256).astype(np.float64)
            total = hist.sum()
            mean = float(hist @ values / total)
            var = float(hist @ (values - mean) ** 2 / total)
            means.append(mean)
            stds.append(var**0.5)
    else:
        s = np.zeros(c)
        s2 = np.zeros(c)
        for start in range(0, n, _CHUNK):
            block = x[start : start + _CHUNK].astype(np.float64)
            s += block.sum(axis=(0, 2, 3))
            s2 += (block**2).sum(axis=(0, 2, 3))
        count = n * x.shape[2] * x.shape[3]
        mean_a = s / count
        var_a = np.maximum(s2 / count - mean_a**2, 0.0)
        means, stds = mean_a.tolist(), np.sqrt(var_a).tolist()
    return tuple(means), tuple(sd if sd > _MIN_STD else 1.0 for sd in stds)


def to_model_input(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Pixels (N, C, H, W) (uint8 or float in [0, 1]) -> float32 ``(p - mean) / std``."""
    out = torch.from_numpy(pixels.astype(np.float32))  # a fresh, writable copy
    if pixels.dtype == np.uint8:
        out.div_(255.0)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    out.div_(torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    return out
