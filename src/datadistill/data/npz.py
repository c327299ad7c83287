"""User data in one ``.npz`` file (``npz:PATH``).

Arrays (read with ``allow_pickle=False``, so the file cannot run code):

- ``x`` or ``images``: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}; uint8
  in [0, 255] (or another integer type in that range) or float in [0, 1]. When both
  axis 1 and the last axis could be channels, (N, C, H, W) is assumed.
- ``y`` or ``labels``: (N,) integers in 0..K-1.
- optional ``x_test`` / ``y_test`` (or ``images_test`` / ``labels_test``); without them a
  stratified 20% test split is carved with a fixed seed.
- optional ``class_names``: (K,) strings; otherwise K = largest label + 1.
- optional ``allow_flip``: a boolean scalar, whether a horizontal flip keeps the label
  (default true; false for digits and characters, so that augmentation never flips them).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from datadistill.data.raw import RawData, class_names_or_indices
from datadistill.data.splits import TEST_FRACTION, TEST_SEED, split_off
from datadistill.errors import DataError

_IMAGE_KEYS = ("x", "images")
_LABEL_KEYS = ("y", "labels")
_TEST_IMAGE_KEYS = ("x_test", "images_test")
_TEST_LABEL_KEYS = ("y_test", "labels_test")


def _pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray | None:
    return next((arrays[k] for k in keys if k in arrays), None)


def images_to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Images in any accepted layout and dtype -> (N, C, H, W) uint8 or float32 in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3):
            if x.shape[3] not in (1, 3):
                raise DataError(
                    f"{where} has images of shape {x.shape}; one axis (1 or 3) must hold "
                    "1 or 3 channels."
                )
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{where} has images of shape {x.shape}; expected (N, H, W), (N, H, W, C) "
            "or (N, C, H, W)."
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where} has integer pixels outside 0..255; store them as uint8.")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DataError(
                f"{where} has float pixels outside [0, 1] (or NaN); scale them to [0, 1] "
                "(e.g. divide by 255) or store uint8."
            )
        return np.ascontiguousarray(x, dtype=np.float32)
    raise DataError(f"{where} has pixels of dtype {x.dtype}; use uint8 or float in [0, 1].")


def labels_to_int64(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels (N,) or (N, 1) of an integer dtype -> (N,) int64; checks the length."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where} has labels of shape {y.shape}; expected (N,).")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise DataError(f"{where} has labels of dtype {y.dtype}; store integer class indices.")
    if y.shape[0] != n:
        raise DataError(f"{where} has {n} images but {y.shape[0]} labels; they must match.")
    if y.size and y.min() < 0:
        raise DataError(f"{where} has negative labels; use class indices 0..K-1.")
    if y.size and int(y.max()) > np.iinfo(np.int64).max:  # uint64: would wrap negative
        raise DataError(f"{where} has label {int(y.max())}; use class indices 0..K-1.")
    return y.astype(np.int64)


def _as_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x


def read_npz(path: Path) -> RawData:
    """Read ``path`` as described in the module docstring."""
    if path.is_dir():
        raise DataError(
            f"{path} is a folder; 'npz:' takes an .npz file (use 'imagefolder:' for a folder of "
            "class folders)."
        )
    if not path.is_file():
        raise DataError(f"The npz file {path} does not exist; check the path after 'npz:'.")
    try:  # (zipfile.is_zipfile takes an unreadable file for "not a zip")
        with path.open("rb"):
            pass
    except OSError as e:
        raise DataError(f"Cannot read {path} ({e.strerror}); check its permissions.") from None
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz file (a zip of arrays); write it with numpy.savez.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # pickled objects, or a damaged .npy header
        raise DataError(
            f"{path} holds an array that cannot be read without pickle or is damaged ({e}); "
            "save plain numeric / string arrays with numpy.savez."
        ) from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{path} is not a readable .npz file ({e}); write it with numpy.savez."
        ) from e
    except MemoryError:
        raise DataError(
            f"{path} declares an array too large for this machine's memory; if it is not "
            "that large, the file is damaged: write it again with numpy.savez."
        ) from None
    except Exception as e:  # noqa: BLE001 (an encrypted member, an unknown compression,
        # a header numpy cannot parse: whatever the zip or .npy readers raise on a bad file)
        raise DataError(
            f"{path} cannot be read as an .npz file ({type(e).__name__}: {e}); write it "
            "with numpy.savez (uncompressed or deflate, without a password)."
        ) from e
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not an .npy file
            raise DataError(
                f"{path} holds {key!r}, which is not a numpy array; write the file with "
                "numpy.savez."
            )
    x, y = _pick(arrays, _IMAGE_KEYS), _pick(arrays, _LABEL_KEYS)
    if x is None or y is None:
        raise DataError(
            f"{path} must hold images under 'x' or 'images' and labels under 'y' or 'labels'; "
            f"it holds {sorted(arrays)}."
        )
    train_x = images_to_nchw(x, f"{path} (images)")
    train_y = labels_to_int64(y, train_x.shape[0], f"{path} (labels)")
    if train_x.shape[0] == 0:
        raise DataError(f"{path} holds no images; save at least one image per class.")
    xt, yt = _pick(arrays, _TEST_IMAGE_KEYS), _pick(arrays, _TEST_LABEL_KEYS)
    if (xt is None) != (yt is None):
        raise DataError(f"{path} must hold both 'x_test' and 'y_test', or neither.")
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US"):
        raise DataError(
            f"{path} has 'class_names' of dtype {names.dtype}; store a 1-D string array."
        )
    test_x = test_y = None
    if xt is not None and yt is not None:
        test_x = images_to_nchw(xt, f"{path} (test images)")
        test_y = labels_to_int64(yt, test_x.shape[0], f"{path} (test labels)")
    top = max(int(train_y.max(initial=-1)), -1 if test_y is None else int(test_y.max(initial=-1)))
    if names is not None:
        num_classes = len(names)
        if top >= num_classes:
            raise DataError(
                f"{path} has label {top} but {num_classes} class_names; labels must be class "
                "indices 0..K-1 into class_names."
            )
    else:
        num_classes = top + 1
        images = len(train_y) + (0 if test_y is None else len(test_y))
        if num_classes > images:  # e.g. a -1 stored as unsigned: billions of empty classes
            raise DataError(
                f"{path} has label {top} but only {images} images: labels must be class "
                "indices 0..K-1 (or give 'class_names')."
            )
    if test_x is None or test_y is None:
        train, test = split_off(train_y, TEST_FRACTION, num_classes, TEST_SEED, "test")
        train_x, test_x = train_x[train], train_x[test]
        train_y, test_y = train_y[train], train_y[test]
    if train_x.dtype != test_x.dtype:  # one uint8, one float: bring both to float [0, 1]
        train_x, test_x = (_as_float(train_x), _as_float(test_x))
    flip = arrays.get("allow_flip")
    if flip is not None and (flip.shape != () or flip.dtype != np.bool_):
        raise DataError(f"{path} has an 'allow_flip' that is not a boolean scalar.")
    decoded = None if names is None else [str(n) for n in names.tolist()]
    raw = RawData(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        class_names=class_names_or_indices(decoded, num_classes),
        allow_flip=True if flip is None else bool(flip),
        source=str(path),
    )
    raw.validate()
    return raw
