"""CIFAR-10 / CIFAR-100 python batches, from their folder or the official .tar.gz.

A batch is a pickled dict with ``data`` (n, 3072) uint8 -- 1024 red, then green, then
blue values of a row-major 32x32 image -- and ``labels`` (CIFAR-10) or ``fine_labels``
(CIFAR-100). Batches are read with :mod:`safe_pickle`, so opening one never runs code.
The tarball is read member by member in one pass, without extracting it.
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datadistill.data.safe_pickle import load_data_pickle
from datadistill.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """Member names of one CIFAR release."""

    train: tuple[str, ...]  # train batch file names
    test: str
    meta: str
    label_key: str  # key of the labels in a batch
    names_key: str  # key of the class names in the meta file
    num_classes: int


CIFAR10 = CifarLayout(
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = CifarLayout(
    train=("train",),
    test="test",
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)


def _str_keys(obj: Any) -> Any:
    """A batch dict with its keys as str: the official files read as str keys with
    ``encoding="latin1"``, but batches saved again after the CIFAR page's recipe
    (``pickle.load(f, encoding="bytes")``) hold ``b"data"`` / ``b"labels"``."""
    if isinstance(obj, dict) and any(isinstance(k, bytes) for k in obj):
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj


def _batch_arrays(obj: Any, layout: CifarLayout, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 32, 32) uint8 images and (n,) int64 labels from an unpickled batch dict."""
    obj = _str_keys(obj)
    if not isinstance(obj, dict) or "data" not in obj or layout.label_key not in obj:
        raise DataError(
            f"{where} is not a CIFAR batch (expected a dict with 'data' and "
            f"'{layout.label_key}'); check that the file belongs to this dataset."
        )
    data, labels = obj["data"], obj[layout.label_key]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
    ):
        shape = getattr(data, "shape", None)
        raise DataError(
            f"{where} has 'data' of shape {shape}, expected (n, 3072) uint8; "
            "delete it and download it again."
        )
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:  # (an int beyond int64)
        raise DataError(f"{where} has non-integer labels; delete it and download it again.") from e
    if y.shape[0] != data.shape[0]:
        raise DataError(
            f"{where} has {data.shape[0]} images but {y.shape[0]} labels; "
            "delete it and download it again."
        )
    if y.size and (y.min() < 0 or y.max() >= layout.num_classes):
        raise DataError(
            f"{where} has labels outside 0..{layout.num_classes - 1}; "
            "check that the file belongs to this dataset."
        )
    return data.reshape(-1, 3, 32, 32), y


def _class_names(obj: Any, layout: CifarLayout, where: str) -> tuple[str, ...]:
    obj = _str_keys(obj)
    names = obj.get(layout.names_key) if isinstance(obj, dict) else None
    if not isinstance(names, (list, tuple)) or len(names) != layout.num_classes:
        raise DataError(
            f"{where} does not list {layout.num_classes} '{layout.names_key}'; "
            "delete it and download it again."
        )
    return tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)


@dataclass(frozen=True)
class CifarArrays:
    train_x: np.ndarray  # (N, 3, 32, 32) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, 3, 32, 32) uint8
    test_y: np.ndarray  # (M,) int64
    class_names: tuple[str, ...] | None  # from the meta file, when present


def _assemble(blobs: dict[str, tuple[bytes, str]], layout: CifarLayout) -> CifarArrays:
    """Decode the batches in ``blobs`` (member name -> (bytes, where))."""

    def batch(member: str) -> tuple[np.ndarray, np.ndarray]:
        data, where = blobs[member]
        return _batch_arrays(load_data_pickle(data, where), layout, where)

    train = [batch(m) for m in layout.train]
    test_x, test_y = batch(layout.test)
    names = None
    if layout.meta in blobs:
        data, where = blobs[layout.meta]
        names = _class_names(load_data_pickle(data, where), layout, where)
    return CifarArrays(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        class_names=names,
    )


def required_members(layout: CifarLayout) -> list[str]:
    """The batch files a folder must hold (the meta file is optional)."""
    return [*layout.train, layout.test]


def read_cifar_folder(folder: Path, layout: CifarLayout) -> CifarArrays:
    """Read the batches from a folder such as ``cifar-10-batches-py/``."""
    blobs: dict[str, tuple[bytes, str]] = {}
    for member in [*required_members(layout), layout.meta]:
        path = folder / member
        if member == layout.meta and not path.is_file():
            continue
        try:
            blobs[member] = (path.read_bytes(), str(path))
        except OSError as e:
            raise DataError(f"Cannot read {path} ({e.strerror}); check that it is readable.") from e
    return _assemble(blobs, layout)


def read_cifar_tarball(archive: Path, layout: CifarLayout) -> CifarArrays:
    """Read the batches straight from the official ``.tar.gz`` (one pass, nothing extracted)."""
    wanted = set(required_members(layout)) | {layout.meta}
    blobs: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in wanted and base not in blobs:
                    fh = tar.extractfile(info)
                    if fh is not None:
                        blobs[base] = (fh.read(), f"{archive} (member {info.name})")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{archive} is not a readable tar archive ({e}); delete it and download it again."
        ) from e
    missing = _missing(blobs, required_members(layout))
    if missing:
        raise DataError(
            f"{archive} lacks the member(s) {', '.join(missing)}; "
            "delete it and download the official archive again."
        )
    return _assemble(blobs, layout)


def _missing(found: dict[str, Any], names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in found]
