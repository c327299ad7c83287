"""User data as a folder of images (``imagefolder:PATH``).

Layout: one sub-folder per class (sorted names give labels 0..K-1), images anywhere
below it with a usual image extension (other files are ignored). If ``PATH`` has both
``train/`` and ``test/`` sub-folders holding the same class folders, those are the
splits; otherwise a stratified 20% test split is carved with a fixed seed.

Images are kept grayscale (1 channel) when every image is grayscale, else converted to
RGB; 16-bit grayscale is scaled to 8 bits (x / 257) and float grayscale read as [0, 1].
All images get the most common size among them: others are resized to it with Pillow's
bilinear filter.

A folder written by ``datadistill export --format png`` holds a ``labels.json`` beside the
class folders; its class names, each file's label and ``allow_flip`` are then used, so an
export reads back with the labels it was written with (sorted folder names could number
the classes otherwise). Its soft labels and learned lr are not read; a ``labels.json`` of
another shape is left alone, and one beside ``train/`` and ``test/`` folders is not read.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datadistill.data.raw import RawData
from datadistill.data.splits import TEST_FRACTION, TEST_SEED, split_off
from datadistill.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _scan(folder: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names, image files and their labels (N,) int64 under ``folder``."""
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(
            f"{folder} has no class sub-folders; put each class's images in its own sub-folder."
        )
    files: list[Path] = []
    labels: list[int] = []
    for k, class_dir in enumerate(classes):
        found = _image_files(class_dir)
        if not found:
            raise DataError(
                f"The class folder {class_dir} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder."
            )
        files += found
        labels += [k] * len(found)
    return [c.name for c in classes], files, np.asarray(labels, dtype=np.int64)


# Pillow's failures on a file: unreadable, corrupt, or over its decompression-bomb limit
# (a damaged header or chunk is a ValueError or a SyntaxError in some of its plugins)
_PILLOW_ERRORS = (
    UnidentifiedImageError,
    OSError,
    Image.DecompressionBombError,
    ValueError,
    SyntaxError,
)


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (W, H)) of an image, without decoding its pixels."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except _PILLOW_ERRORS as e:
        raise DataError(f"Pillow cannot read the image {path} ({e}); remove or re-save it.") from e


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer grayscale scaled to 8 bits (x / 257, so 65535 -> 255), float
    grayscale read as [0, 1] (x * 255); Pillow's own conversion clips them to 0..255 instead,
    which turns a 16-bit image almost white."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        a = np.asarray(img, dtype=np.float64) / 257.0
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float64) * 255.0
    else:
        return img
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """Pixels of one image as (H, W, C) uint8 in ``mode`` ("L" or "RGB") at ``size`` (W, H)."""
    try:
        with Image.open(path) as opened:
            img = _eight_bit(opened).convert(mode)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except _PILLOW_ERRORS as e:
        raise DataError(
            f"Pillow cannot decode the image {path} ({e}); remove or re-save it."
        ) from e
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def _load_images(files: list[Path], mode: str, size: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) uint8."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(files), size[1], size[0], channels), dtype=np.uint8)
    for i, path in enumerate(files):
        out[i] = _decode(path, mode, size)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _exported_labels(
    folder: Path, names: list[str], files: list[Path], labels: np.ndarray
) -> tuple[list[str], np.ndarray, bool]:
    """Class names, labels and allow_flip from the ``labels.json`` of a PNG export, if
    ``folder`` has one (a ``labels.json`` of another shape is left alone)."""
    path = folder / "labels.json"
    if not path.is_file():
        return names, labels, True
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # most likely a damaged export's: its class names and allow_flip are lost
        warnings.warn(
            f"{path} cannot be read ({exc}); the images are labelled by their folders, with "
            "flips allowed. Fix or remove it to silence this.",
            stacklevel=2,
        )
        return names, labels, True
    rows = meta.get("files") if isinstance(meta, dict) else None
    ours = (
        isinstance(rows, list)
        and isinstance(meta.get("class_names"), list)
        and all(isinstance(r, dict) and "file" in r and "label" in r for r in rows)
    )
    if not ours or rows is None:  # not an export's: a user's own file
        return names, labels, True
    flip = meta.get("allow_flip", True)
    bad = [r for r in rows if not isinstance(r["file"], str) or type(r["label"]) is not int]
    if bad or not isinstance(flip, bool):
        what = f"the row {bad[0]}" if bad else f"allow_flip={flip!r}"
        raise DataError(
            f"{path} looks like an export's label file but {what} is not a file name with an "
            "integer label (or a boolean allow_flip); fix or remove it."
        )
    # written with "/" by the export; tolerate a hand-edited "\\" or "./"
    by_file = {r["file"].replace("\\", "/").removeprefix("./"): r["label"] for r in rows}
    exported = [str(n) for n in meta["class_names"]]
    relative = [p.relative_to(folder).as_posix() for p in files]
    missing = [f for f in relative if f not in by_file]
    if missing:
        raise DataError(
            f"{path} lists no label for {missing[0]} ({len(missing)} image(s) in all); "
            "remove labels.json to label images by their folders, or add them to it."
        )
    given = [by_file[f] for f in relative]
    if min(given) < 0:
        raise DataError(f"{path} gives a negative label; fix or remove it.")
    if max(given) >= max(len(exported), len(given)):  # (a class per label below it)
        raise DataError(
            f"{path} gives label {max(given)} to {len(given)} images of {len(exported)} "
            "classes; labels are class indices 0..K-1 into its class_names: fix or remove it."
        )
    new = np.asarray(given, np.int64)
    k = max(len(exported), int(new.max()) + 1)
    return [*exported, *(str(i) for i in range(len(exported), k))], new, flip


def _has_split_layout(folder: Path) -> bool:
    train, test = folder / "train", folder / "test"
    return train.is_dir() and test.is_dir() and bool(_class_dirs(train)) and bool(_class_dirs(test))


# folder names that mean a split, not a class
_SPLIT_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})


def _check_not_split_folders(folder: Path) -> None:
    """Refuse split folders (``train/``, ``val/``, ...) that are not the train / test layout
    read as splits, instead of reading them as classes named after the splits."""
    dirs = _class_dirs(folder)
    if dirs and all(d.name.lower() in _SPLIT_NAMES for d in dirs) and any(map(_class_dirs, dirs)):
        names = ", ".join(d.name for d in dirs)
        raise DataError(
            f"{folder} holds split folders ({names}), not one folder per class; datadistill "
            "reads splits from folders named 'train' and 'test' (lower case) that each hold "
            "the same class folders: arrange them so, or point 'imagefolder:' at the "
            "training folder alone."
        )


def read_imagefolder(folder: Path) -> RawData:
    """Read ``folder`` as described in the module docstring."""
    if folder.is_file():
        raise DataError(
            f"{folder} is a file; 'imagefolder:' takes a folder with one sub-folder of images "
            "per class (use 'npz:' for an .npz file)."
        )
    if not folder.is_dir():
        raise DataError(
            f"The image folder {folder} does not exist; check the path after 'imagefolder:'."
        )
    if _has_split_layout(folder):
        names, train_files, train_y = _scan(folder / "train")
        test_names, test_files, test_y = _scan(folder / "test")
        if test_names != names:
            raise DataError(
                f"{folder / 'test'} must have the same class folders as {folder / 'train'}; "
                f"got {test_names} vs {names}."
            )
        allow_flip = True
    else:
        _check_not_split_folders(folder)
        names, files, labels = _scan(folder)
        names, labels, allow_flip = _exported_labels(folder, names, files, labels)
        train, test = split_off(labels, TEST_FRACTION, len(names), TEST_SEED, "test")
        train_files, test_files = [files[i] for i in train], [files[i] for i in test]
        train_y, test_y = labels[train], labels[test]
    headers = [_header(p) for p in train_files + test_files]
    mode = "L" if all(m in _GRAY_MODES for m, _ in headers) else "RGB"
    size = Counter(s for _, s in headers).most_common(1)[0][0]  # (W, H)
    resized = sum(s != size for _, s in headers)
    if resized:
        warnings.warn(
            f"{resized} of {len(headers)} images in {folder} are not {size[0]}x{size[1]} "
            "pixels (the most common size) and are resized to it; resize them beforehand "
            "to choose the size.",
            stacklevel=2,
        )
    raw = RawData(
        train_x=_load_images(train_files, mode, size),
        train_y=train_y,
        test_x=_load_images(test_files, mode, size),
        test_y=test_y,
        class_names=tuple(names),
        allow_flip=allow_flip,
        source=str(folder),
    )
    raw.validate()
    return raw
