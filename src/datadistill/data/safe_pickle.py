"""A restricted unpickler for the CIFAR python batches: data, never code.

A pickle can name any importable callable and call it while loading (``os.system``
included). This unpickler resolves only the numpy globals needed to rebuild an
ndarray and ``_codecs.encode`` (how protocol 2 stores bytes); anything else raises
:class:`DataError` before it is imported.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from datadistill.errors import DataError


def _reconstruct() -> Any:
    core = getattr(np, "_core", None)  # numpy >= 2
    if core is not None:
        return core.multiarray._reconstruct
    return np.core.multiarray._reconstruct  # type: ignore[attr-defined]  # pragma: no cover


def _allowed() -> dict[tuple[str, str], Any]:
    import _codecs

    rebuild = _reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): rebuild,
        ("numpy._core.multiarray", "_reconstruct"): rebuild,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }


class _DataOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file, encoding="latin1")
        self._where = where
        self._globals = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._where} asks to load {module}.{name}, which a dataset file never needs; "
                "refusing to read it (it may be malicious), use the official file instead."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._where} uses persistent ids; it is not a dataset batch.")


def load_data_pickle(data: bytes, where: str) -> Any:
    """Unpickle ``data`` (read from ``where``, named in errors) allowing only array data."""
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), where).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"{where} is not a readable python batch ({type(e).__name__}: {e}); "
            "delete it and download it again."
        ) from e
