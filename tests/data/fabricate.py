"""Tiny fabricated dataset files in their original formats, for the data tests."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def labels_for(n: int, k: int = 10) -> np.ndarray:
    """Balanced labels 0..k-1, interleaved: (n,) uint8."""
    return (np.arange(n) % k).astype(np.uint8)


def pixels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    """An MNIST-like set of four IDX files in ``folder``; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_STEMS[0]: pixels((n_train, 28, 28), 0),
        IDX_STEMS[1]: labels_for(n_train),
        IDX_STEMS[2]: pixels((n_test, 28, 28), 1),
        IDX_STEMS[3]: labels_for(n_test),
    }
    for stem, arr in arrays.items():
        data = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def cifar_batch(n: int, k: int, label_key: str, seed: int, offset: int = 0) -> dict:
    return {
        "batch_label": "fabricated",
        label_key: [int(v) for v in (np.arange(n) + offset) % k],
        "data": pixels((n, 3072), seed),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def cifar_files(which: str, n_per_batch: int = 6) -> dict[str, bytes]:
    """Pickled (protocol 2) CIFAR members: name -> bytes. ``which`` is cifar10 or cifar100."""
    if which == "cifar10":
        members = {
            f"data_batch_{i}": cifar_batch(n_per_batch, 10, "labels", i, (i - 1) * n_per_batch)
            for i in range(1, 6)
        }
        members["test_batch"] = cifar_batch(n_per_batch, 10, "labels", 9)
        members["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    else:
        members = {
            "train": cifar_batch(200, 100, "fine_labels", 1),
            "test": cifar_batch(100, 100, "fine_labels", 2),
            "meta": {"fine_label_names": [f"f{i}" for i in range(100)]},
        }
    return {name: pickle.dumps(obj, protocol=2) for name, obj in members.items()}


def write_cifar_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def write_cifar_tarball(path: Path, top: str, files: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_svhn(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    """SVHN .mat files: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train_32x32.mat", n_train, 0), ("test_32x32.mat", n_test, 1)):
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)  # 10 means digit 0
        scipy.io.savemat(folder / name, {"X": pixels((32, 32, 3, n), seed), "y": y})


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# Python 2 pickles, as in the official CIFAR archives: py2 ``str`` is a byte string that
# Python 3 decodes with the ``encoding`` given to the unpickler, and numpy lives at
# ``numpy.core``. Written opcode by opcode (protocol 2) so the tests cover that path.


def _py2_str(s: bytes) -> bytes:
    return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + len(s).to_bytes(4, "little") + s


def _py2_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    return b"J" + v.to_bytes(4, "little", signed=True)


def py2_array(arr: np.ndarray) -> bytes:
    """A uint8 2-D array pickled the way Python 2 numpy did."""
    n, d = arr.shape
    dtype = (
        b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
        + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1)
        + _py2_int(0) + b"tb"
    )  # fmt: skip
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
        + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
        + b"(" + _py2_int(1) + _py2_int(n) + _py2_int(d) + b"\x86" + dtype + b"\x89"
        + _py2_str(arr.tobytes()) + b"tb"
    )  # fmt: skip


def py2_dict(items: dict[bytes, bytes]) -> bytes:
    """A pickled dict whose keys are py2 strings and whose values are already-encoded."""
    body = b"".join(_py2_str(k) + v for k, v in items.items())
    return b"\x80\x02}(" + body + b"u."


def py2_int_list(values: list[int]) -> bytes:
    return b"](" + b"".join(_py2_int(v) for v in values) + b"e"


def py2_str_list(values: list[str]) -> bytes:
    return b"](" + b"".join(_py2_str(v.encode()) for v in values) + b"e"
