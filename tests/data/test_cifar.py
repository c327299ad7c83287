"""CIFAR-10 / CIFAR-100 python batches, in a folder and in the .tar.gz; malicious pickles."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from datadistill.data import load_dataset
from datadistill.data.safe_pickle import load_data_pickle
from datadistill.errors import DataError
from tests.data.fabricate import (
    cifar_files,
    pixels,
    py2_array,
    py2_dict,
    py2_int_list,
    py2_str_list,
    write_cifar_folder,
    write_cifar_tarball,
)


def _check_cifar10(real, files):
    batch = pickle.loads(files["data_batch_1"])
    assert real.train_x.shape == (30, 3, 32, 32) and real.test_x.shape == (6, 3, 32, 32)
    first = batch["data"][0].reshape(3, 32, 32).astype(np.float32) / 255  # R, G, B planes
    assert np.allclose(real.train_x[0].numpy(), first)
    assert real.train_y[:6].tolist() == batch["labels"]
    assert real.info.class_names == tuple(f"c{i}" for i in range(10))
    assert real.info.allow_flip is True and real.info.channels == 3


@pytest.mark.parametrize(
    "layout", ["cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py"]
)
def test_cifar10_folder(tmp_path, layout):
    files = cifar_files("cifar10")
    write_cifar_folder(tmp_path / layout, files)
    real = load_dataset("cifar10", tmp_path, val_size=0, normalization="none", download=False)
    _check_cifar10(real, files)


def test_cifar10_batches_saved_with_bytes_keys(tmp_path):
    """Batches pickled again after ``pickle.load(f, encoding="bytes")`` (the CIFAR page's
    recipe) hold b"data" / b"labels" / b"label_names": read like the official ones."""

    def as_bytes_keys(obj):
        if isinstance(obj, dict):
            return {
                k.encode(): [n.encode() for n in v] if k == "label_names" else v
                for k, v in obj.items()
            }
        return obj

    files = cifar_files("cifar10")
    resaved = {
        n: pickle.dumps(as_bytes_keys(pickle.loads(b)), protocol=2) for n, b in files.items()
    }
    write_cifar_folder(tmp_path / "cifar-10-batches-py", resaved)
    real = load_dataset("cifar10", tmp_path, val_size=0, normalization="none", download=False)
    _check_cifar10(real, files)


@pytest.mark.parametrize("where", ["cifar10", "."])
def test_cifar10_tarball_read_without_extracting(tmp_path, where):
    files = cifar_files("cifar10")
    write_cifar_tarball(tmp_path / where / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    real = load_dataset("cifar10", tmp_path, val_size=0, normalization="none", download=False)
    _check_cifar10(real, files)
    assert sorted(p.name for p in (tmp_path / where).iterdir()) == ["cifar-10-python.tar.gz"]


@pytest.mark.parametrize("tarball", [False, True])
def test_cifar100_fine_labels_and_names(tmp_path, tarball):
    files = cifar_files("cifar100")
    if tarball:
        write_cifar_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    else:
        write_cifar_folder(tmp_path / "cifar-100-python", files)
    real = load_dataset("cifar100", tmp_path, val_size=0.5, download=False)
    assert real.info.num_classes == 100 and real.info.class_names[7] == "f7"
    assert real.class_counts("train") == [1] * 100 and real.class_counts("val") == [1] * 100
    assert real.test_x.shape == (100, 3, 32, 32)


def test_cifar10_without_meta_uses_builtin_names(tmp_path):
    files = cifar_files("cifar10")
    del files["batches.meta"]
    write_cifar_folder(tmp_path / "cifar-10-batches-py", files)
    real = load_dataset("cifar10", tmp_path, download=False)
    assert real.info.class_names[0] == "airplane"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("tarball", [False, True])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, tarball):
    marker = tmp_path / "pwned"
    files = cifar_files("cifar10")
    files["data_batch_3"] = pickle.dumps({"data": _Evil(marker), "labels": []}, protocol=2)
    if tarball:
        write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    else:
        write_cifar_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(DataError, match="system") as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert "data_batch_3" in str(err.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_other_globals():
    for payload in (pickle.dumps(print), pickle.dumps(np.float64(1.0)), pickle.dumps(range(3))):
        with pytest.raises(DataError, match="refusing"):
            load_data_pickle(payload, "blob")
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(load_data_pickle(pickle.dumps({"a": arr}, protocol=2), "blob")["a"], arr)


def test_corrupt_and_malformed_batches_name_the_file(tmp_path):
    files = cifar_files("cifar10")
    files["test_batch"] = files["test_batch"][:50]
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_folder(folder, files)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(folder / "test_batch") in str(err.value)
    bad = {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"\(n, 3072\)"):
        load_dataset("cifar10", tmp_path, download=False)
    wide = {"data": np.zeros((2, 3072), np.uint8), "labels": [2**70, 0]}  # beyond int64
    (folder / "test_batch").write_bytes(pickle.dumps(wide, protocol=2))
    with pytest.raises(DataError, match="non-integer labels"):
        load_dataset("cifar10", tmp_path, download=False)


def test_tarball_missing_members(tmp_path):
    files = cifar_files("cifar10")
    del files["data_batch_5"]
    path = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(path, "cifar-10-batches-py", files)
    with pytest.raises(DataError, match="data_batch_5") as err:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(path) in str(err.value)


def test_python2_pickles_of_the_official_archive_load(tmp_path):
    files = {}
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = pixels((10, 3072), seed=i)
        labels = list(range(10))
        files[name] = py2_dict({b"data": py2_array(data), b"labels": py2_int_list(labels)})
    files["batches.meta"] = py2_dict({b"label_names": py2_str_list([f"n{i}" for i in range(10)])})
    write_cifar_folder(tmp_path / "cifar-10-batches-py", files)
    real = load_dataset("cifar10", tmp_path, val_size=0, normalization="none", download=False)
    assert real.info.class_names[3] == "n3" and real.train_x.shape == (50, 3, 32, 32)
    first = pixels((10, 3072), seed=0)[0].reshape(3, 32, 32).astype(np.float32) / 255
    assert np.allclose(real.train_x[0].numpy(), first)
