"""The builtin datasets, registered by name in :data:`DATASETS`.

A loader takes the data root and whether it may download, and returns
:class:`RawData`. Files are found through :mod:`locate` (the one search list) and,
when missing, fetched through :mod:`download` (official URLs and checksums).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from datadistill.data.cifar import (
    CIFAR10,
    CIFAR100,
    CifarLayout,
    read_cifar_folder,
    read_cifar_tarball,
    required_members,
)
from datadistill.data.digits import read_digits
from datadistill.data.download import REMOTES, DownloadFailed, download_all, missing_files_error
from datadistill.data.idx import read_idx_pair
from datadistill.data.locate import find_files, home_dir
from datadistill.data.raw import RawData
from datadistill.data.svhn import read_svhn_mat
from datadistill.registry import Registry

DatasetLoader = Callable[[Path, bool], RawData]  # (data root, download allowed) -> RawData

DATASETS: Registry[DatasetLoader] = Registry("dataset")

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_FALLBACK_NAMES = tuple(str(i) for i in range(100))  # used only without the meta file

# Published per-channel pixel statistics, used by normalization="declared".
DECLARED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _raw(
    dataset: str,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    class_names: tuple[str, ...],
    allow_flip: bool,
    source: Path,
) -> RawData:
    train_x, train_y, test_x, test_y = arrays
    mean, std = DECLARED_STATS.get(dataset, (None, None))
    raw = RawData(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        class_names=class_names,
        allow_flip=allow_flip,
        declared_mean=mean,
        declared_std=std,
        source=str(source),
    )
    raw.validate()
    return raw


def require_files(
    dataset: str,
    root: Path,
    download: bool,
    required: Sequence[Sequence[str]],
    alternative: str = "",
) -> list[Path]:
    """One path per required file (each given as its accepted names), found through the
    search list or, when allowed, downloaded to ``root/<name>/``.

    ``alternative`` is added to the error message (e.g. "or the extracted folder").
    """
    found = find_files(root, dataset, required)
    if found is not None:
        return found
    folder = home_dir(root, dataset)

    def absent() -> list[str]:  # the first accepted name of each file not in ``folder``
        return [names[0] for names in required if not any((folder / n).is_file() for n in names)]

    missing = absent()
    shown = [m + alternative for m in missing]
    if not download:
        raise missing_files_error(dataset, folder, shown)
    # the outermost folder the download may create (the data root itself, when it does
    # not exist yet: a mistyped --data-root)
    whole = Path(os.path.abspath(folder))  # ("typo/../data" is "data")
    top = next((p for p in reversed((whole, *whole.parents)) if not p.exists()), None)
    try:
        download_all(dataset, folder, missing)
    except DownloadFailed as e:
        if top is not None:
            _remove_empty_folders(whole, top)  # leave no empty folder behind a failure
        # name only what is still missing: files fetched before the failure stay
        shown = [m + alternative for m in absent()] or shown
        raise missing_files_error(dataset, folder, shown, str(e), e.local) from None
    found = find_files(root, dataset, required)
    if found is None:  # pragma: no cover - the download wrote every missing file
        raise missing_files_error(dataset, folder, shown)
    return found


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty folders."""
    for p in (folder, *folder.parents):
        try:
            p.rmdir()  # only an empty folder
        except OSError:
            return
        if p == top:
            return


def _idx_loader(dataset: str, class_names: tuple[str, ...]) -> DatasetLoader:
    def load(root: Path, download: bool) -> RawData:
        paths = require_files(dataset, root, download, [(f"{s}.gz", s) for s in _IDX_STEMS])
        train = read_idx_pair(paths[0], paths[1], len(class_names))
        test = read_idx_pair(paths[2], paths[3], len(class_names))
        return _raw(dataset, (*train, *test), class_names, False, paths[0].parent)

    return load


def _cifar_loader(dataset: str, layout: CifarLayout, names: tuple[str, ...]) -> DatasetLoader:
    archive = REMOTES[dataset][0].filename
    folder_name = "cifar-10-batches-py" if layout is CIFAR10 else "cifar-100-python"

    def load(root: Path, download: bool) -> RawData:
        batches = find_files(root, dataset, [(m,) for m in required_members(layout)])
        if batches is not None:  # an extracted folder wins over the tarball
            source = batches[0].parent
            arrays = read_cifar_folder(source, layout)
        else:
            alt = f" (or its extracted {folder_name}/ folder)"
            (source,) = require_files(dataset, root, download, [(archive,)], alt)
            arrays = read_cifar_tarball(source, layout)
        return _raw(
            dataset,
            (arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y),
            arrays.class_names or names,
            True,
            source,
        )

    return load


def _load_svhn(root: Path, download: bool) -> RawData:
    required = [("train_32x32.mat",), ("test_32x32.mat",)]
    train_path, test_path = require_files("svhn", root, download, required)
    arrays = (*read_svhn_mat(train_path), *read_svhn_mat(test_path))
    return _raw("svhn", arrays, DIGIT_NAMES, False, train_path.parent)


def _load_digits(root: Path, download: bool) -> RawData:
    return read_digits()


def _register(
    name: str, loader: DatasetLoader, shape: tuple[int, int, int], classes: int, description: str
) -> None:
    DATASETS.register(name, shape=shape, num_classes=classes, description=description)(loader)


_register("digits", _load_digits, (1, 8, 8), 10, "scikit-learn's 8x8 digits, bundled")
_register("mnist", _idx_loader("mnist", DIGIT_NAMES), (1, 28, 28), 10, "MNIST digits")
_register(
    "fashion-mnist", _idx_loader("fashion-mnist", FASHION_NAMES), (1, 28, 28), 10, "Fashion-MNIST"
)
_register("kmnist", _idx_loader("kmnist", KMNIST_NAMES), (1, 28, 28), 10, "Kuzushiji-MNIST")
_register("cifar10", _cifar_loader("cifar10", CIFAR10, CIFAR10_NAMES), (3, 32, 32), 10, "CIFAR-10")
_register(
    "cifar100",
    _cifar_loader("cifar100", CIFAR100, CIFAR100_FALLBACK_NAMES),
    (3, 32, 32),
    100,
    "CIFAR-100 (fine labels)",
)
_register("svhn", _load_svhn, (3, 32, 32), 10, "SVHN cropped digits")
