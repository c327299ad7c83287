"""``load_dataset``: name -> RealData (read, split, normalise, optionally whiten)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datadistill._names import USER_DATA_HINT, split_user_data
from datadistill.data.builtin import DATASETS
from datadistill.data.imagefolder import read_imagefolder
from datadistill.data.info import DatasetInfo
from datadistill.data.locate import resolve_root
from datadistill.data.normalization import NORMALIZATIONS, channel_stats, to_model_input
from datadistill.data.npz import read_npz
from datadistill.data.raw import RawData
from datadistill.data.real import RealData
from datadistill.data.splits import CAP_SEED, VAL_SEED, split_off, stratified_subset
from datadistill.data.zca import DEFAULT_EPS, ZCA
from datadistill.errors import ConfigError, DataError, UnknownNameError


def _read(name: str, root: str | os.PathLike[str] | None, download: bool) -> tuple[str, RawData]:
    """(the name recorded in DatasetInfo, the raw arrays)."""
    if not isinstance(name, str):  # a null or a number read from a config file
        DATASETS.canonical(name)  # raises the registry's one-line error
    user = split_user_data(name)
    if user is not None:
        kind, rest = user
        if not rest:
            raise DataError(f"Give a path after '{kind}:', e.g. '{kind}:data/my_set'.")
        path = Path(rest).expanduser()
        raw = read_imagefolder(path) if kind == "imagefolder" else read_npz(path)
        return f"{kind}:{rest}", raw
    try:
        canonical = DATASETS.canonical(name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{str(e).rstrip('.')}{USER_DATA_HINT}") from None
    return canonical, DATASETS.get(canonical)(resolve_root(root), download)


def absolute_dataset_name(name: str) -> str:
    """``npz:PATH`` / ``imagefolder:PATH`` with PATH made absolute (``~`` expanded, links
    resolved), so that the same data spelled ``pets/``, ``./pets`` or from another working
    directory is recognised as the same; builtin names are returned unchanged."""
    user = split_user_data(name)
    if user is None or not user[1]:
        return name
    return f"{user[0]}:{Path(user[1]).expanduser().resolve()}"


def with_absolute_name(info: dict[str, Any]) -> dict[str, Any]:
    """A dataset's recorded info (``DatasetInfo.to_dict()``, or a record of one) with a
    user-data name made absolute (:func:`absolute_dataset_name`)."""
    name = info.get("name")
    return {**info, "name": absolute_dataset_name(name)} if isinstance(name, str) else info


def _check_options(normalization: str, zca: bool, zca_eps: float, max_train: int | None) -> None:
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"The 'normalization' option must be one of {', '.join(map(repr, NORMALIZATIONS))}. "
            f"Got {normalization!r} instead."
        )
    if not isinstance(zca, bool):
        raise ConfigError(f"The 'zca' option must be True or False. Got {zca!r} instead.")
    if zca and not (isinstance(zca_eps, (int, float)) and zca_eps > 0):
        raise ConfigError(f"The 'zca_eps' option must be a float > 0. Got {zca_eps!r} instead.")
    if max_train is not None and (
        isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1
    ):
        raise ConfigError(f"The 'max_train' option must be an int >= 1. Got {max_train!r} instead.")


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    val_size: float | int = 0.1,
    zca: bool = False,
    zca_eps: float = DEFAULT_EPS,
    normalization: str = "train",
    download: bool = True,
    max_train: int | None = None,
    digest: str | None = None,
) -> RealData:
    """Load a dataset as :class:`RealData` in model-input space.

    Args:
        name: a registered dataset (see ``DATASETS``), ``"imagefolder:PATH"`` or ``"npz:PATH"``
            (PATH relative to the working directory).
        root: the data folder of the builtin datasets; default ``$DATADISTILL_DATA``, else
            ``~/.cache/datadistill``.
        val_size: validation carved from train, stratified and deterministic: a fraction
            in [0, 1) or a count; 0 gives an empty validation split.
        zca: whiten all splits with a ZCA fitted on the normalised train split.
        zca_eps: the ZCA regulariser.
        normalization: ``"train"`` (per-channel stats of the train split), ``"declared"``
            (the published constants where known, else train stats) or ``"none"``.
        download: fetch missing builtin files from their official URLs.
        max_train: cap the train split (stratified, deterministic), for quick runs.
        digest: the ``RawData.digest`` the files must give (``real.options["digest"]`` of
            an earlier load, or an artefact's ``data``): a DataError when they give another.
            ``load_dataset(**real.options)`` loads the same data again, checked (the
            whitening is recorded in ``real.info``: add ``zca=real.info.zca``).
    """
    _check_options(normalization, zca, zca_eps, max_train)
    if digest is not None and not isinstance(digest, str):
        raise ConfigError(f"The 'digest' option must be a str. Got {digest!r} instead.")
    info_name, raw = _read(name, root, download)
    read = raw.digest()
    if digest is not None and read != digest:
        raise DataError(
            f"The files of {name} give data digest {read}, not the {digest} asked for: other "
            "images or labels (an edited file or another copy); load the files the digest "
            "was taken from, or drop digest to accept these."
        )
    k = raw.num_classes
    if k < 2:
        raise ConfigError(
            f"{name} has {k} class{'' if k == 1 else 'es'}; distillation needs at least 2 (one "
            "folder per class for imagefolder:, two or more label values for npz:)."
        )
    train_idx, val_idx = split_off(raw.train_y, val_size, k, VAL_SEED, "validation")
    if max_train is not None and max_train < len(train_idx):
        train_idx = train_idx[stratified_subset(raw.train_y[train_idx], max_train, k, CAP_SEED)]
    empty = np.flatnonzero(np.bincount(raw.train_y[train_idx], minlength=k) == 0)
    if len(empty):
        if not (raw.train_y == empty[0]).any():
            cause = "the data has no image of it; give every class at least one image"
        elif max_train is not None and max_train < len(raw.train_y):
            cause = f"--max-train {max_train} is too small for its {k} classes; use at least {k}"
        else:
            cause = "the validation split takes all its images; lower --val-size"
        raise ConfigError(
            f"Class {raw.class_names[int(empty[0])]!r} of {name} has no training images left: "
            f"{cause}."
        )
    train_px = raw.train_x[train_idx]  # (N, C, H, W), stored dtype
    if normalization == "none":
        c = train_px.shape[1]
        mean, std = (0.0,) * c, (1.0,) * c
    elif normalization == "declared" and raw.declared_mean and raw.declared_std:
        mean, std = raw.declared_mean, raw.declared_std
    else:
        mean, std = channel_stats(train_px)

    def tensors(px: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return to_model_input(px, mean, std), torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = tensors(train_px, raw.train_y[train_idx])
    val_x, val_y = tensors(raw.train_x[val_idx], raw.train_y[val_idx])
    test_x, test_y = tensors(raw.test_x, raw.test_y)
    whitening = None
    if zca:
        n, d = train_x.shape[0], train_x[0].numel()
        if n <= d:  # the centred covariance has rank below n: eps alone scales the rest
            warnings.warn(
                f"ZCA is fitted on {n} training images of {d} values each (no more images than "
                "dimensions), so most directions are whitened by eps alone, which can cost "
                "much accuracy on a small set; load more images or leave zca off.",
                stacklevel=2,
            )
        whitening = ZCA.fit(train_x, eps=zca_eps)
        train_x, val_x, test_x = (whitening.transform(t) for t in (train_x, val_x, test_x))
    info = DatasetInfo(
        name=info_name,
        num_classes=k,
        channels=int(train_x.shape[1]),
        image_size=(int(train_x.shape[2]), int(train_x.shape[3])),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        class_names=raw.class_names,
        allow_flip=raw.allow_flip,
        zca=zca,
        zca_eps=float(zca_eps) if zca else None,
    )
    real = RealData(info, train_x, train_y, val_x, val_y, test_x, test_y, whitening)
    # what it takes to load these data again (an artefact records it for `evaluate`), and
    # the digest of what was read, to tell whether the data loaded again are the same
    options: dict[str, object] = {
        "name": absolute_dataset_name(name),
        "val_size": val_size,
        "max_train": max_train,
        "digest": read,
    }
    if normalization != "train":
        options["normalization"] = normalization
    real.options = options
    return real
