"""The IDX format of MNIST, Fashion-MNIST and KMNIST (gzipped or raw).

Header: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions,
then one big-endian uint32 per dimension; the data follow, row-major. Image files have
magic 0x00000803 (N, H, W), label files 0x00000801 (N,).
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from datadistill.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(
            f"Cannot read {path} ({e.strerror}); check that it exists and is readable."
        ) from e
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{path} is a truncated or corrupt gzip file ({e}); "
                "delete it and download it again."
            ) from e
    return data


def parse_idx(data: bytes, magic: int, path: Path) -> np.ndarray:
    """Parse IDX ``data`` whose header must carry ``magic``; returns a uint8 array whose
    shape is the header's dimensions (a view on ``data``, read-only)."""
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path} is too short to be an IDX file ({len(data)} bytes); "
            "delete it and download it again."
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path} has IDX magic 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}); check that the file is the "
            "right one and not corrupt."
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + math.prod(dims)  # (Python ints: no int64 wrap-around)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: its header {dims} needs {expected} bytes but it has "
            f"{len(data)}; delete it and download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_pair(
    images_path: Path, labels_path: Path, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: images (N, 1, H, W) uint8 and labels (N,) int64."""
    images = parse_idx(read_bytes(images_path), IMAGES_MAGIC, images_path)
    labels = parse_idx(read_bytes(labels_path), LABELS_MAGIC, labels_path)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; the two files must come from the same release."
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(
            f"{labels_path} contains label {int(labels.max())} but the dataset has "
            f"{num_classes} classes; check that the file is the right one and not corrupt."
        )
    return images[:, None], labels.astype(np.int64)
