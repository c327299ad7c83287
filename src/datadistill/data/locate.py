"""Where the builtin datasets' files are looked for: the one search list.

The data root is the ``root`` argument, else the ``DATADISTILL_DATA`` environment
variable, else ``~/.cache/datadistill``. Inside it each dataset is looked for in the
folders of :data:`SEARCH_DIRS`, in order: ``root/<name>/`` (where downloads go), the
layouts torchvision writes, then ``root/`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datadistill.errors import DataError

ENV_VAR = "DATADISTILL_DATA"
DEFAULT_ROOT = Path("~/.cache/datadistill")

SEARCH_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw", "MNIST", "."),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "."),
    "kmnist": ("kmnist", "KMNIST/raw", "KMNIST", "."),
    "cifar10": ("cifar10", "cifar10/cifar-10-batches-py", "cifar-10-batches-py", "."),
    "cifar100": ("cifar100", "cifar100/cifar-100-python", "cifar-100-python", "."),
    "svhn": ("svhn", "SVHN", "."),
}


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The data root: ``root``, else ``$DATADISTILL_DATA``, else ``~/.cache/datadistill``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


def home_dir(root: Path, dataset: str) -> Path:
    """The folder a dataset is downloaded to: ``root/<name>/``."""
    return root / SEARCH_DIRS[dataset][0]


def _folder_key(name: str) -> str:
    return name.lower().replace("_", "-").split("/")[0]


def _check_not_anothers_folder(root: Path, dataset: str) -> None:
    """MNIST, Fashion-MNIST and KMNIST share their file names, so files directly in the
    root could be any of them: refuse a root that is named as another dataset's folder
    (``--data-root data/fashion-mnist --dataset mnist``)."""
    here = _folder_key(root.resolve().name)
    mine = {_folder_key(s) for s in SEARCH_DIRS[dataset] if s != "."}
    for other, subs in SEARCH_DIRS.items():
        theirs = {_folder_key(s) for s in subs if s != "."}
        if other != dataset and here in theirs and here not in mine:
            raise DataError(
                f"The data root {root} looks like {other}'s folder, not {dataset}'s; point "
                f"--data-root at the folder that holds {dataset}'s files (or its parent)."
            )


def find_files(root: Path, dataset: str, required: Sequence[Sequence[str]]) -> list[Path] | None:
    """The first search folder holding every required file, as one path per entry.

    ``required`` lists, per file, its accepted names in order of preference (e.g. the
    ``.gz`` and the uncompressed name). Returns ``None`` when no folder has them all.
    """
    for sub in SEARCH_DIRS[dataset]:
        folder = root / sub
        if not folder.is_dir():
            continue
        if sub == ".":
            _check_not_anothers_folder(root, dataset)
        found = []
        for names in required:
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None
