"""load_dataset: names, roots, normalisation, missing files and downloads, digits."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat

import numpy as np
import pytest
import torch

from datadistill.data import DATASETS, load_dataset
from datadistill.data.download import REMOTES, Remote
from datadistill.errors import ConfigError, DataError, UnknownNameError
from tests.data.fabricate import IDX_STEMS, idx_bytes, write_idx_set

BUILTINS = ["digits", "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn"]


def test_registry_lists_the_builtins():
    assert sorted(DATASETS.names()) == sorted(BUILTINS)
    assert all(DATASETS.meta(n)["description"] for n in DATASETS.names())


def test_unknown_name_suggests_and_mentions_user_data():
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist'") as err:
        load_dataset("mnits")
    assert "imagefolder:PATH" in str(err.value) and "npz:PATH" in str(err.value)


def test_digits_from_scikit_learn():
    real = load_dataset("digits")
    assert real.train_x.shape[1:] == (1, 8, 8) and real.info.num_classes == 10
    assert len(real.train_y) + len(real.val_y) + len(real.test_y) == 1797
    assert len(real.test_y) == 359  # round(0.2 * 1797), stratified, the same every call
    assert torch.equal(real.test_y, load_dataset("digits").test_y)


def test_normalisation_modes(tmp_path):
    write_idx_set(tmp_path / "mnist", n_train=100)
    real = load_dataset("mnist", tmp_path, download=False)
    flat = real.train_x.double()
    assert abs(flat.mean().item()) < 1e-6 and abs(flat.std(unbiased=False).item() - 1) < 1e-5
    pixels = real.denormalize(real.train_x)
    assert real.info.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-6)
    declared = load_dataset("mnist", tmp_path, normalization="declared", download=False)
    assert declared.info.mean == (0.1307,) and declared.info.std == (0.3081,)
    none = load_dataset("mnist", tmp_path, normalization="none", download=False)
    assert none.info.mean == (0.0,) and none.info.std == (1.0,)
    assert 0.0 <= none.train_x.min() and none.train_x.max() <= 1.0
    kmnist_root = tmp_path / "k"
    write_idx_set(kmnist_root / "kmnist", n_train=100)
    k = load_dataset("kmnist", kmnist_root, normalization="declared", download=False)
    assert k.info.mean == real.info.mean  # no published constants: train stats
    with pytest.raises(ConfigError, match="'train', 'declared', 'none'"):
        load_dataset("mnist", tmp_path, normalization="imagenet", download=False)


def test_float_pixels_statistics(tmp_path):
    real = load_dataset("digits", val_size=0)
    pixels = real.denormalize(real.train_x).double()
    assert real.info.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-6)
    assert real.info.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-6)


def test_missing_files_name_files_and_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=False)
    msg = str(err.value)
    assert all(f"{s}.gz" in msg for s in IDX_STEMS) and str(tmp_path / "mnist") in msg
    assert "DATADISTILL_DATA" in msg and "--data-root" in msg
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz \(or its extracted"):
        load_dataset("cifar10", tmp_path, download=False)
    with pytest.raises(DataError, match="train_32x32.mat, test_32x32.mat"):
        load_dataset("svhn", tmp_path, download=False)


def test_root_defaults_to_environment_variable(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "env" / "FashionMNIST" / "raw")
    monkeypatch.setenv("DATADISTILL_DATA", str(tmp_path / "env"))
    assert load_dataset("fashion-mnist", download=False).info.class_names[-1] == "Ankle boot"


def _serve_mnist(tmp_path, monkeypatch, corrupt_md5=False):
    """Official-looking .gz files under a file:// mirror, with their MD5s in REMOTES."""
    served = tmp_path / "mirror"
    write_idx_set(served, n_train=20)
    remotes = []
    for stem in IDX_STEMS:
        md5 = hashlib.md5((served / f"{stem}.gz").read_bytes()).hexdigest()
        remotes.append(
            Remote(f"{stem}.gz", "0" * 32 if corrupt_md5 else md5, (served.as_uri() + "/",))
        )
    monkeypatch.setitem(REMOTES, "mnist", tuple(remotes))


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    _serve_mnist(tmp_path, monkeypatch)
    root = tmp_path / "data"
    real = load_dataset("mnist", root, download=True)
    assert len(real.train_y) + len(real.val_y) == 20
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(
        f"{s}.gz" for s in IDX_STEMS
    )
    if os.name != "nt":  # readable by others as any new file, not mkstemp's 0600
        from datadistill._files import _umask

        for p in (root / "mnist").iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_umask(), p


def test_download_with_bad_md5_fails_cleanly(tmp_path, monkeypatch):
    _serve_mnist(tmp_path, monkeypatch, corrupt_md5=True)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="MD5") as err:
        load_dataset("mnist", root, download=True)
    assert str(root / "mnist") in str(err.value)
    assert not (root / "mnist").exists()  # no partial or unverified file, no empty folder
    # a data root that did not exist (a mistyped --data-root) is not left behind either,
    # while one that existed stays
    assert not root.exists()
    root.mkdir()
    with pytest.raises(DataError, match="MD5"):
        load_dataset("mnist", root / "deeper" / "still", download=True)
    assert root.is_dir() and not any(root.iterdir())


def test_local_files_are_not_checked_against_archive_md5(tmp_path, monkeypatch):
    _serve_mnist(tmp_path, monkeypatch, corrupt_md5=True)
    folder = tmp_path / "data" / "mnist"
    write_idx_set(folder, n_train=20)
    path = folder / f"{IDX_STEMS[0]}.gz"  # recompressed: other bytes, same content
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    assert load_dataset("mnist", tmp_path / "data", download=True).info.num_classes == 10


def test_partial_download_fetches_only_missing(tmp_path, monkeypatch):
    _serve_mnist(tmp_path, monkeypatch)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    (folder / IDX_STEMS[3]).write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)))  # raw test labels
    load_dataset("mnist", tmp_path / "data", download=True)
    assert not (folder / f"{IDX_STEMS[3]}.gz").exists()


def test_a_failed_download_names_only_the_files_still_missing(tmp_path, monkeypatch):
    """File 1 arrives, file 2 cannot be fetched: the error lists files 2-4 and says to
    retry (the download was allowed), and the fetched file stays on disk."""
    _serve_mnist(tmp_path, monkeypatch)
    first, second, *rest = REMOTES["mnist"]
    broken = Remote(second.filename, second.md5, ((tmp_path / "nowhere").as_uri() + "/",))
    monkeypatch.setitem(REMOTES, "mnist", (first, broken, *rest))
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path / "data", download=True)
    msg = str(err.value)
    assert (tmp_path / "data" / "mnist" / first.filename).is_file()
    listed = ", ".join(r.filename for r in (second, *rest))
    assert f"The mnist files {listed} were not found (download failed: " in msg
    assert first.filename not in msg
    assert msg.endswith("or retry the download.")


def test_a_data_root_that_cannot_be_written_is_the_missing_files_error(tmp_path, monkeypatch):
    _serve_mnist(tmp_path, monkeypatch)
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root, download=True)
    msg = str(err.value)
    assert msg.startswith("The mnist files train-images-idx3-ubyte.gz, ")
    assert "could not be downloaded: the data folder cannot be written (" in msg
    assert str(root / "mnist") in msg and "file://" not in msg  # the folder, not a mirror
    assert msg.endswith(
        "or choose another data folder with --data-root / the DATADISTILL_DATA "
        "environment variable."
    )
    assert "\n" not in msg


def test_a_dataset_name_that_is_not_a_string_is_one_clear_error():
    with pytest.raises(UnknownNameError, match="A dataset name must be a string, got None"):
        load_dataset(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("zca", ["yes", 1, None])
def test_the_zca_switch_is_a_bool(zca):
    with pytest.raises(ConfigError, match="'zca' option must be True or False"):
        load_dataset("digits", zca=zca)


def test_the_digest_names_the_data_read_not_its_files_or_splits(tmp_path):
    """The same images and labels give the same digest from gzipped or raw IDX files and
    under any validation split or cap; one changed label gives another."""
    arrays = write_idx_set(tmp_path / "gz" / "mnist", n_train=60)
    write_idx_set(tmp_path / "raw" / "mnist", n_train=60, gz=False)
    digest = load_dataset("mnist", tmp_path / "gz", download=False).options["digest"]
    assert isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 23
    for root, options in ((tmp_path / "raw", {}), (tmp_path / "gz", {"val_size": 0})):
        assert load_dataset("mnist", root, download=False, **options).options["digest"] == digest
    capped = load_dataset("mnist", tmp_path / "gz", download=False, max_train=20)
    assert capped.options["digest"] == digest
    folder = tmp_path / "edited" / "mnist"
    write_idx_set(folder, n_train=60)
    stem = IDX_STEMS[1]  # the training labels
    labels = arrays[stem].copy()
    labels[0] = (labels[0] + 1) % 10
    (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    edited = load_dataset("mnist", tmp_path / "edited", download=False)
    assert edited.options["digest"] != digest


def test_the_digest_is_of_the_values_not_their_memory_layout():
    from datadistill.data.raw import RawData

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])

    def raw(train_x: np.ndarray, train_y: np.ndarray) -> RawData:
        return RawData(train_x, train_y, x[:2], y[:2], ("a", "b"), allow_flip=False)

    digest = raw(x, y).digest()
    assert raw(np.asfortranarray(x), y.astype(np.int32)).digest() == digest
    assert raw(x, y.astype(">i8")).digest() == digest
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1
    assert raw(changed, y).digest() != digest
    floats = x.astype(np.float32) / 255
    assert raw(floats, y).digest() != digest  # another stored form
    assert raw(floats.astype(">f4"), y).digest() == raw(floats, y).digest()  # big-endian


def test_load_dataset_checks_a_digest_it_is_given(tmp_path):
    """``load_dataset(**real.options)`` loads the same data again; a digest of other files
    is one clear DataError, and a digest that is not a string a ConfigError."""
    write_idx_set(tmp_path / "mnist", n_train=60)
    real = load_dataset("mnist", tmp_path, download=False, val_size=0.2)
    again = load_dataset(**real.options, root=tmp_path, download=False)
    assert torch.equal(again.train_x, real.train_x) and again.options == real.options
    with pytest.raises(DataError, match=r"give data digest sha256:\w+, not the sha256:0123"):
        load_dataset("mnist", tmp_path, download=False, digest="sha256:0123456789abcdef")
    with pytest.raises(ConfigError, match="'digest' option must be a str"):
        load_dataset("mnist", tmp_path, download=False, digest=12)
