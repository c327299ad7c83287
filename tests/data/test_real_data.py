"""RealData: sampling, class indices, pixel space, device moves; DatasetInfo round trip."""

from __future__ import annotations

import json

import pytest
import torch

from datadistill.data import DatasetInfo, RealData, load_dataset
from datadistill.errors import ConfigError, DataError
from tests.data.fabricate import write_idx_set


@pytest.fixture
def real(tmp_path) -> RealData:
    write_idx_set(tmp_path / "mnist", n_train=100)  # 10 per class; val 1 per class
    return load_dataset("mnist", tmp_path, download=False)


def _rows_of(real, images):
    """Positions in train_x of each image of ``images`` (N, C, H, W)."""
    flat = real.train_x.reshape(len(real.train_x), -1)
    return [int((flat == img.reshape(-1)).all(1).nonzero()[0]) for img in images]


def test_sample_is_deterministic_without_replacement_and_leaves_global_rng(real):
    state = torch.random.get_rng_state()
    a = real.sample(3, 5, torch.Generator().manual_seed(0))
    b = real.sample(3, 5, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.shape == (5, 1, 28, 28) and torch.equal(a, b)
    rows = _rows_of(real, a)
    assert len(set(rows)) == 5 and all(real.train_y[r] == 3 for r in rows)
    c = real.sample(3, 5, torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_sample_more_than_class_returns_all_shuffled(real):
    out = real.sample(0, 50, torch.Generator().manual_seed(0))
    assert out.shape == (9, 1, 28, 28)
    assert sorted(_rows_of(real, out)) == real.class_indices()[0].tolist()
    assert real.sample(0, 0, torch.Generator()).shape == (0, 1, 28, 28)
    with pytest.raises(ConfigError, match="Class index"):
        real.sample(10, 1, torch.Generator())


def test_sample_per_class_shape_membership_determinism(real):
    state = torch.random.get_rng_state()
    out = real.sample_per_class(4, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert out.shape == (10, 4, 1, 28, 28)
    for c in range(10):
        rows = _rows_of(real, out[c])
        assert len(set(rows)) == 4 and all(real.train_y[r] == c for r in rows)
    assert torch.equal(out, real.sample_per_class(4, torch.Generator().manual_seed(0)))
    assert real.sample_per_class(100, torch.Generator()).shape == (10, 9, 1, 28, 28)


def _keep_train(real: RealData, keep: torch.Tensor) -> RealData:
    """``real`` with only the training images where ``keep`` is true."""
    x, y = real.train_x[keep], real.train_y[keep]
    return RealData(real.info, x, y, real.val_x, real.val_y, real.test_x, real.test_y, real.zca)


def test_sample_per_class_is_not_capped_by_the_smallest_class(real):
    keep = torch.ones(len(real.train_y), dtype=torch.bool)
    keep[real.class_indices()[2][2:]] = False  # class 2 keeps 2 of its 9 images
    small = _keep_train(real, keep)
    out = small.sample_per_class(6, torch.Generator().manual_seed(0))
    assert out.shape == (10, 6, 1, 28, 28)  # not (10, 2, ...)
    for c in range(10):
        rows = _rows_of(small, out[c])
        assert all(small.train_y[r] == c for r in rows)
        assert len(set(rows)) == (2 if c == 2 else 6)
    # the small class's two images fill its slots alternately (3 times each)
    rows = _rows_of(small, out[2])
    assert sorted(rows.count(r) for r in set(rows)) == [3, 3]
    keep[real.class_indices()[2]] = False  # class 2 now has no training images
    empty = _keep_train(real, keep)
    with pytest.raises(DataError, match="Class 2 has no training images"):
        empty.sample_per_class(6, torch.Generator())


def test_class_indices_and_counts(real):
    idx = real.class_indices("train")
    assert len(idx) == 10 and all((real.train_y[i] == c).all() for c, i in enumerate(idx))
    assert real.class_counts() == [9] * 10 and real.class_counts("val") == [1] * 10
    assert real.class_counts("test") == [1] * 10
    with pytest.raises(ConfigError, match="valid splits"):
        real.class_indices("holdout")


def test_normalize_denormalize(real):
    pixels = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(real.denormalize(real.normalize(pixels)), pixels, atol=1e-6)
    x = real.train_x[:4]
    assert torch.allclose(real.normalize(real.denormalize(x)), x, atol=1e-5)
    assert real.denormalize(torch.full((1, 1, 28, 28), 100.0)).max() == 1.0
    assert real.normalize(pixels[0]).shape == (1, 28, 28)


def test_to_returns_a_new_realdata(real):
    moved = real.to("cpu")
    assert moved is not real and torch.equal(moved.train_x, real.train_x)
    assert moved.info == real.info and "mnist" in repr(moved)


def test_dataset_info_json_round_trip(real):
    d = json.loads(json.dumps(real.info.to_dict()))
    assert DatasetInfo.from_dict(d) == real.info
    assert isinstance(d["image_size"], list)
    del d["num_classes"]
    with pytest.raises(DataError, match="num_classes"):
        DatasetInfo.from_dict(d)
