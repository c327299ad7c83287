"""IDX reading (MNIST, Fashion-MNIST, KMNIST): gz and raw, layouts, corrupt files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from datadistill.data import load_dataset
from datadistill.data.idx import IMAGES_MAGIC, parse_idx, read_idx_pair
from datadistill.errors import DataError
from tests.data.fabricate import IDX_STEMS, idx_bytes, write_idx_set


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_raw_idx_exactly(tmp_path, gz):
    arrays = write_idx_set(tmp_path / "mnist", gz=gz)
    real = load_dataset("mnist", tmp_path, val_size=0, normalization="none", download=False)
    assert real.train_x.shape == (20, 1, 28, 28) and real.test_x.shape == (10, 1, 28, 28)
    assert real.train_x.dtype.is_floating_point and str(real.train_y.dtype) == "torch.int64"
    expected = arrays[IDX_STEMS[0]].astype(np.float32) / 255
    assert np.allclose(real.train_x[:, 0].numpy(), expected)
    assert real.train_y.tolist() == arrays[IDX_STEMS[1]].tolist()
    assert real.info.allow_flip is False and real.info.class_names[0] == "0"


@pytest.mark.parametrize(
    ("name", "layout"),
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("kmnist", "KMNIST/raw"),
     ("fashion-mnist", "fashion-mnist"), ("kmnist", ".")],
)  # fmt: skip
def test_finds_torchvision_and_flat_layouts(tmp_path, name, layout):
    write_idx_set(tmp_path / layout)
    real = load_dataset(name, tmp_path, download=False)
    assert real.info.name == name and real.info.num_classes == 10
    assert len(real.train_y) + len(real.val_y) == 20


def _corrupt(tmp_path, stem, data, gz=True):
    folder = tmp_path / "mnist"
    write_idx_set(folder, gz=gz)
    path = folder / (f"{stem}.gz" if gz else stem)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_truncated_idx_names_the_file(tmp_path):
    data = idx_bytes(np.zeros((20, 28, 28), np.uint8))[:-100]
    path = _corrupt(tmp_path, IDX_STEMS[0], data, gz=False)
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(err.value)


def test_truncated_gzip_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    write_idx_set(folder)
    path = folder / f"{IDX_STEMS[0]}.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="gzip") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(err.value)


def test_wrong_magic_and_trailing_bytes_are_refused(tmp_path):
    labels = idx_bytes(np.zeros(20, np.uint8))
    path = _corrupt(tmp_path, IDX_STEMS[0], labels)  # a label file where images belong
    with pytest.raises(DataError, match="magic") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="longer than its header"):
        parse_idx(idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"xx", IMAGES_MAGIC, path)
    with pytest.raises(DataError, match="too short"):
        parse_idx(b"\x00\x00", IMAGES_MAGIC, path)


def test_a_header_whose_size_overflows_int64_is_truncated_not_a_crash(tmp_path):
    """2**31 x 2**31 x 4 bytes wraps to 0 in int64; the size is counted in Python ints."""
    dims = (2**31, 2**31, 4)
    data = IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with pytest.raises(DataError, match="is truncated"):
        parse_idx(data, IMAGES_MAGIC, tmp_path / "x")


def test_mismatched_counts_name_both_files(tmp_path):
    path = _corrupt(tmp_path, IDX_STEMS[1], idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="20 images") as err:
        load_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(err.value) and IDX_STEMS[0] in str(err.value)


def test_label_out_of_range_is_refused(tmp_path):
    write_idx_set(tmp_path)
    bad = tmp_path / IDX_STEMS[3]
    bad.write_bytes(idx_bytes(np.full(10, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12") as err:
        read_idx_pair(tmp_path / f"{IDX_STEMS[2]}.gz", bad, 10)
    assert str(bad) in str(err.value)


def test_a_root_named_as_another_datasets_folder_is_refused(tmp_path):
    """The three IDX datasets share file names: files directly in a root named
    ``fashion-mnist`` are not read as MNIST."""
    write_idx_set(tmp_path / "fashion-mnist")
    with pytest.raises(DataError, match="looks like fashion-mnist's folder, not mnist's"):
        load_dataset("mnist", tmp_path / "fashion-mnist", download=False)
    real = load_dataset("fashion-mnist", tmp_path / "fashion-mnist", download=False)
    assert real.info.name == "fashion-mnist"
