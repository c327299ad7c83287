"""Deterministic stratified splits (validation from train, test from user data, caps).

Every split uses its own fixed seed and a local numpy Generator, so it is the same on
every call and never reads or changes a global RNG.
"""

from __future__ import annotations

import numpy as np

from datadistill.errors import ConfigError

VAL_SEED = 0  # validation carved from train
TEST_SEED = 1  # test carved from user data / digits when no test split is given
CAP_SEED = 2  # the max_train subset
TEST_FRACTION = 0.2


def allocate(counts: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainders),
    with per-class bounds ``lo <= out <= hi``; all arrays are (K,) ints.

    Ties are broken by class index, so the result is deterministic.
    """
    n = int(counts.sum())
    quota = counts * (total / n) if n else np.zeros(len(counts))
    out = np.clip(np.floor(quota).astype(np.int64), lo, hi)
    frac = quota - np.floor(quota)
    # Add to the largest remainders first, take from the smallest first.
    up = np.argsort(-frac, kind="stable")
    down = np.argsort(frac, kind="stable")
    while out.sum() < total:
        room = up[out[up] < hi[up]]
        if room.size == 0:
            break
        take = room[: total - int(out.sum())]
        out[take] += 1
    while out.sum() > total:
        room = down[out[down] > lo[down]]
        if room.size == 0:
            break
        take = room[: int(out.sum()) - total]
        out[take] -= 1
    return out


def stratified_pick(
    y: np.ndarray, per_class: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``per_class[c]`` random indices of each class ``c`` of labels ``y`` (N,).

    Returns ``(picked, rest)``, both sorted ascending, together a partition of 0..N-1.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))  # (N,)
    grouped = perm[np.argsort(y[perm], kind="stable")]  # class by class, shuffled within
    counts = np.bincount(y, minlength=len(per_class))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(y)) - np.repeat(starts, counts)  # position within its class
    mask = rank < np.repeat(per_class, counts)
    return np.sort(grouped[mask]), np.sort(grouped[~mask])


def split_off(
    y: np.ndarray, size: float | int, num_classes: int, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``size`` (a fraction in [0, 1) or a count) of ``y``, stratified by class,
    keeping at least one example of every class on the other side.

    Returns ``(kept, held)`` index arrays, sorted.
    """
    n = len(y)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ConfigError(
            f"The {what} size must be a fraction in [0, 1) or an int count. Got {size!r}."
        )
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= size < 1.0:
            raise ConfigError(
                f"The {what} size must be a fraction in [0, 1) or an int count. Got {size!r}."
            )
        total = int(round(float(size) * n))
    else:
        if not 0 <= size < n:
            raise ConfigError(
                f"The {what} size must be an int in [0, {n}) for {n} training images. Got {size!r}."
            )
        total = int(size)
    counts = np.bincount(y, minlength=num_classes)
    held_n = allocate(counts, total, np.zeros_like(counts), np.maximum(counts - 1, 0))
    held, kept = stratified_pick(y, held_n, seed)
    return kept, held


def stratified_subset(y: np.ndarray, size: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``size`` of labels ``y`` (N,), with at least
    one example per class when ``size >= num_classes``."""
    counts = np.bincount(y, minlength=num_classes)
    lo = np.minimum(counts, 1) if size >= num_classes else np.zeros_like(counts)
    picked, _ = stratified_pick(y, allocate(counts, size, lo, counts), seed)
    return picked
