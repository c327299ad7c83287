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


def find_files(root: Path, dataset: str, required: Sequence[Sequence[str]]) -> list[Path] | None:
    """The first search folder holding every required file, as one path per entry.

    ``required`` lists, per file, its accepted names in order of preference (e.g. the
    ``.gz`` and the uncompressed name). Returns ``None`` when no folder has them all.
    """
    for sub in SEARCH_DIRS[dataset]:
        folder = root / sub
        if not folder.is_dir():
            continue
        found = []
        for names in required:
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None
