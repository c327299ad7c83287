"""Deterministic stratified splits: validation, test carving, max_train caps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datadistill.data import load_dataset
from datadistill.data.splits import allocate, split_off, stratified_subset
from datadistill.errors import ConfigError
from tests.data.fabricate import write_idx_set


def _unbalanced_labels():
    return np.repeat(np.arange(4), [50, 30, 15, 5])  # (100,)


def test_val_split_is_stratified_deterministic_and_a_partition():
    y = _unbalanced_labels()
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()
    kept, held = split_off(y, 0.2, 4, seed=0, what="validation")
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.bincount(y[held], minlength=4).tolist() == [10, 6, 3, 1]
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(100))
    again_kept, again_held = split_off(y, 0.2, 4, seed=0, what="validation")
    assert np.array_equal(held, again_held) and np.array_equal(kept, again_kept)
    assert not np.array_equal(held, split_off(y, 0.2, 4, seed=5, what="validation")[1])


def test_int_sizes_zero_and_keep_one_per_class():
    y = _unbalanced_labels()
    assert len(split_off(y, 7, 4, 0, "validation")[1]) == 7
    kept, held = split_off(y, 0, 4, 0, "validation")
    assert len(held) == 0 and len(kept) == 100
    kept, _ = split_off(np.array([0, 1, 1, 1]), 0.9, 2, 0, "validation")
    assert set(np.array([0, 1, 1, 1])[kept].tolist()) == {0, 1}


@pytest.mark.parametrize("bad", [1.0, -0.1, 100, -1, True, "0.1"])
def test_invalid_sizes_raise_config_error(bad):
    with pytest.raises(ConfigError, match="validation size"):
        split_off(_unbalanced_labels(), bad, 4, 0, "validation")


def test_allocate_exact_total_within_bounds():
    counts = np.array([3, 3, 3])
    out = allocate(counts, 4, np.zeros(3, np.int64), counts)
    assert out.sum() == 4 and out.tolist() == [2, 1, 1]
    sub = stratified_subset(_unbalanced_labels(), 8, 4, seed=2)
    assert len(sub) == 8 and set(_unbalanced_labels()[sub].tolist()) == {0, 1, 2, 3}


def test_allocate_gives_the_rest_to_the_largest_remainders_first():
    counts = np.array([10, 7, 3])  # quotas of 5: 2.5, 1.75, 0.75
    assert allocate(counts, 5, np.zeros(3, np.int64), counts).tolist() == [2, 2, 1]
    counts = np.array([5, 3, 2])  # quotas 2.5, 1.5, 1.0: a tie goes to the lower class
    assert allocate(counts, 5, np.zeros(3, np.int64), counts).tolist() == [3, 1, 1]
    counts = np.array([8, 1, 1])  # quotas of 3: 2.4, 0.3, 0.3; lower bounds 0, 1, 1
    assert allocate(counts, 3, np.array([0, 1, 1]), counts).tolist() == [1, 1, 1]


def test_load_dataset_val_and_max_train(tmp_path):
    write_idx_set(tmp_path / "mnist", n_train=200)
    a = load_dataset("mnist", tmp_path, val_size=0.1, download=False)
    b = load_dataset("mnist", tmp_path, val_size=0.1, download=False)
    assert a.class_counts("val") == [2] * 10 and a.class_counts("train") == [18] * 10
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    capped = load_dataset("mnist", tmp_path, val_size=20, max_train=50, download=False)
    assert capped.class_counts("train") == [5] * 10 and len(capped.val_y) == 20
    with pytest.raises(ConfigError, match="max_train"):
        load_dataset("mnist", tmp_path, max_train=0, download=False)
