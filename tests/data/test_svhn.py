"""SVHN .mat files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from datadistill.data import load_dataset
from datadistill.errors import DataError
from tests.data.fabricate import write_svhn


@pytest.mark.parametrize("layout", ["svhn", "SVHN", "."])
def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path, layout):
    write_svhn(tmp_path / layout)
    real = load_dataset("svhn", tmp_path, val_size=0, normalization="none", download=False)
    assert real.train_x.shape == (20, 3, 32, 32) and real.test_x.shape == (10, 3, 32, 32)
    assert real.train_y[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    mat = scipy.io.loadmat(tmp_path / layout / "train_32x32.mat")
    expected = mat["X"][:, :, :, 0].transpose(2, 0, 1).astype(np.float32) / 255  # (3, 32, 32)
    assert np.allclose(real.train_x[0].numpy(), expected)
    assert real.info.allow_flip is False


def test_svhn_bad_files_name_the_file(tmp_path):
    folder = tmp_path / "svhn"
    write_svhn(folder)
    path = folder / "test_32x32.mat"
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(DataError) as err:
        load_dataset("svhn", tmp_path, download=False)
    assert str(path) in str(err.value)
    scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match="4 images but 3 labels"):
        load_dataset("svhn", tmp_path, download=False)


def test_svhn_images_of_another_dtype_are_refused(tmp_path):
    write_svhn(tmp_path / "svhn")
    path = tmp_path / "svhn" / "train_32x32.mat"
    mat = scipy.io.loadmat(path)
    scipy.io.savemat(path, {"X": mat["X"].astype(np.float64) * 2, "y": mat["y"]})
    with pytest.raises(DataError, match="dtype float64, expected uint8"):
        load_dataset("svhn", tmp_path, download=False)
