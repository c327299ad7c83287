"""The shareable result of a distillation: one ``.safetensors`` file with a JSON manifest.

Tensors: ``images`` (N, C, H, W) float32 in model-input space, ``labels`` (N,) int64,
optional ``soft_labels`` (N, K; a teacher's have one row per training image), optional
``lr`` (scalar learned training lr), optional ``zca_inverse`` (the upper triangle of the
symmetric inverse, row by row) / ``zca_mean`` (to show whitened images un-whitened;
formats 1-3 held the whole inverse and also ``zca_matrix``, the whitening matrix, which
is computed from the inverse when needed).
A multi-formation set (manifest ``factor`` above 1) stores its compact images; each decodes
to ``factor**2`` training images (:meth:`Distilled.training_set`).
The header's metadata holds ``manifest``: a JSON document (format version, package
version, dataset info, method and hyperparameters, ipc, seed, expected protocol, costs,
evaluation results, and ``artefact_bytes``: the file's own size). Safetensors holds no
pickle, so opening a shared file never runs code.
"""

from __future__ import annotations

import json
import numbers
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from datadistill._files import ARTEFACT_NAME, share_like_new_files, with_added_suffix
from datadistill.data import DatasetInfo
from datadistill.data.real import to_pixels
from datadistill.data.zca import DEFAULT_EPS, ZCA, pack_symmetric, symmetric, unpack_symmetric
from datadistill.errors import ConfigError, DataError
from datadistill.synthetic.formation import check_factor, decode_set, encode

FORMAT_VERSION = 4  # what this package writes for a whitened set
# format 1: ``images`` is the training set itself; format 2 adds the manifest's ``factor``
# (the images are stored tiles to decode); format 3 adds the manifest's ``teacher`` (soft
# labels from an expert, one row per training image, whose random baseline must be labelled
# by the same teacher); format 4 stores a whitened set's ZCA as the upper triangle of its
# symmetric inverse and its mean (formats 1-3 held the whitening matrix and the whole
# inverse: 76 MB for a CIFAR set, now 19 MB). Each set is written in the
# oldest format that describes it, so a plain set is still format 1; a newer format stops
# an older reader, which would misread it (a teacher-labelled set beside a hard-labelled
# baseline) or refuse it half-way (a ZCA without its matrix).
READABLE_FORMATS = (1, 2, 3, 4)
TEACHER_FORMAT = 3
TEACHER_KEY = "teacher"  # where the manifest records a teacher (datadistill.labels)
_ZCA_KEYS = {"zca_inverse": "inverse", "zca_mean": "mean"}  # what a whitened set holds
_ZCA_MATRIX_KEY = "zca_matrix"  # also held by whitened sets of formats 1-3


def _package_version() -> str:
    from datadistill import __version__

    return __version__


@dataclass(frozen=True)
class Distilled:
    """A distilled dataset plus everything needed to use and judge it."""

    images: Tensor  # (N, C, H, W) float32, model-input space
    labels: Tensor  # (N,) int64
    info: DatasetInfo
    soft_labels: Tensor | None = None  # (N, K) logits; multi-formation: or (N * factor**2, K)
    lr: float | None = None  # learned training learning rate
    zca: ZCA | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    factor: int = 1  # multi-formation: each stored image decodes to factor**2 training images

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, dict):
            raise DataError(f"manifest must be a dict of JSON values; got {self.manifest!r}.")
        info, images, labels = self.info, self.images, self.labels
        try:
            check_factor(self.factor, info.image_size)
        except ConfigError as exc:
            raise DataError(str(exc)) from None
        expected = (info.channels, *info.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise DataError(
                f"The images have shape {tuple(images.shape)}, but {info.name} images are "
                f"(N, {', '.join(map(str, expected))}); give images of the dataset's shape."
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise DataError(
                f"Give one integer label per image: {images.shape[0]} images, labels of shape "
                f"{tuple(labels.shape)} and dtype {labels.dtype}."
            )
        if labels.numel() and not (0 <= int(labels.min()) <= int(labels.max()) < info.num_classes):
            raise DataError(
                f"Labels must lie in 0..{info.num_classes - 1} for {info.name}'s "
                f"{info.num_classes} classes; got {int(labels.min())}..{int(labels.max())}."
            )
        lr = self.lr
        if lr is not None and not (
            isinstance(lr, (numbers.Real, Tensor)) and not isinstance(lr, bool)
        ):
            raise DataError(f"lr must be a number (the learned lr) or None; got {lr!r}.")
        soft = self.soft_labels
        n, k, tiles = images.shape[0], info.num_classes, self.factor**2
        if soft is not None and tuple(soft.shape) not in {(n, k), (n * tiles, k)}:
            per_tile = f" or, one per training image, ({n * tiles}, {k})" if tiles > 1 else ""
            raise DataError(
                f"soft_labels must have shape (N, K) = ({n}, {k}){per_tile}; "
                f"got {tuple(soft.shape)}."
            )
        # what the manifest says of the set itself holds in memory as in the file (only
        # the file's own entries, format_version, package_version, artefact_bytes, wait
        # for save)
        object.__setattr__(self, "manifest", {**self.manifest, **self._described()})

    def _described(self) -> dict[str, Any]:
        """The manifest entries derived from the set itself."""
        n = int(self.images.shape[0])
        return {
            "dataset": self.info.to_dict(),
            "ipc": self.ipc,
            "num_images": n,
            "factor": self.factor,
            "num_training_images": n * self.factor**2,
        }

    @property
    def ipc(self) -> int:
        """Stored images per class (the set's size over the number of classes): the storage
        budget, also for a multi-formation set, which trains on ``ipc * factor**2``."""
        return int(self.images.shape[0] // self.info.num_classes)

    def training_set(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """What a network trains on: ``(images, labels, soft_labels or None)``, the stored
        tensors themselves unless the set is multi-formation, whose images are decoded."""
        return decode_set(self.images, self.labels, self.soft_labels, self.factor)

    def with_manifest(self, **entries: Any) -> Distilled:
        """A copy whose manifest is updated with ``entries`` (the entries that describe the
        set itself, ``dataset``, ``ipc``, ``num_images``, ``factor`` and
        ``num_training_images``, always come from the set)."""
        return replace(self, manifest={**self.manifest, **entries})

    def as_dataset(self) -> Dataset[tuple[Tensor, ...]]:
        """A torch Dataset of ``(image, label)`` or ``(image, label, soft_label)`` rows."""
        images, labels, soft = self.training_set()
        if soft is not None:
            return TensorDataset(images, labels, soft)
        return TensorDataset(images, labels)

    def pixels(self, decoded: bool = False) -> Tensor:
        """Images mapped back to displayable pixels in [0, 1] (un-whitened, un-normalised):
        the stored images, or with ``decoded`` the training images. A whitened
        multi-formation set's stored images are its un-whitened training images tiled
        again at tile resolution (an image's whitening spans all of it, not one tile)."""
        if decoded or (self.factor > 1 and self.zca is not None):
            images = self.training_set()[0].detach().float().cpu()
            px = to_pixels(images, self.info, self.zca)
            # whitening mixes all the pixels of an image, so a stored mosaic of whitened
            # tiles is un-whitened as its training images are, one tile each, then tiled
            return px if decoded else encode(px, self.factor)
        return to_pixels(self.images.detach().float().cpu(), self.info, self.zca)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the artefact (atomically) and return its path."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(
                f"{path} is a folder; give a file path such as {path / ARTEFACT_NAME}."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Tensor] = {
            "images": self.images.detach().float().cpu().contiguous(),
            "labels": self.labels.detach().long().cpu().contiguous(),
        }
        if self.soft_labels is not None:
            tensors["soft_labels"] = self.soft_labels.detach().float().cpu().contiguous()
        if self.lr is not None:
            tensors["lr"] = torch.tensor(float(self.lr))
        # what load() would refuse (values that are not finite, no images) is not written
        problem = _tensor_problem(
            tensors["images"],
            tensors["labels"],
            tensors.get("soft_labels"),
            tensors.get("lr"),
            self.info,
        )
        if problem:
            raise DataError(f"This set cannot be saved: {problem}, so it would not read back.")
        if self.zca is not None:  # the inverse's upper triangle (it is symmetric) and mean
            inverse = self.zca.inverse.detach().float().cpu()
            tensors["zca_inverse"] = pack_symmetric(symmetric(inverse)).contiguous()
            tensors["zca_mean"] = self.zca.mean.detach().float().cpu().contiguous()
        # the oldest format that describes the set (see READABLE_FORMATS)
        version = (
            FORMAT_VERSION
            if self.zca is not None
            else TEACHER_FORMAT
            if TEACHER_KEY in self.manifest
            else 2
            if self.factor != 1
            else 1
        )
        manifest = {
            **self.manifest,
            "format_version": version,
            "package_version": _package_version(),
            **self._described(),
        }
        # The manifest records the file's own size: write until the recorded number is the
        # size of the file that carries it. Only its digits change the header, and their
        # count never falls, so two or three passes settle it.
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            size = 0
            for _ in range(8):
                manifest["artefact_bytes"] = size
                metadata = {"manifest": json.dumps(manifest, sort_keys=True)}
                save_file(tensors, str(tmp), metadata=metadata)
                written = tmp.stat().st_size
                if written == size:
                    break
                size = written
            else:  # pragma: no cover - the size is a fixed point after a few passes
                raise RuntimeError("the artefact's size did not settle; please report this.")
            share_like_new_files(tmp)
            tmp.replace(path)
        except SafetensorError as exc:  # safetensors' own I/O errors (a full disk, ...)
            raise DataError(
                f"Cannot write the artefact {path} ({exc}); free space or choose a writable folder."
            ) from None
        finally:
            tmp.unlink(missing_ok=True)  # a failed write leaves no partial file
        return path


def _zip_kind(path: Path) -> str | None:
    """What a zip archive at ``path`` is ("npz": NumPy arrays, else "torch": torch.save's
    format, such as a run's checkpoint), or ``None`` for anything else."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    return "npz" if names and all(n.endswith(".npy") for n in names) else "torch"


def _tensor_problem(
    images: Tensor, labels: Tensor, soft: Tensor | None, lr: Tensor | None, info: DatasetInfo
) -> str:
    """What makes a file's tensors unusable as a set ("" if nothing): its dtypes, values
    that are not finite, no images, more classes than images and class names together (a
    damaged count: every class has an image or a name), an lr that is not one number."""
    if not images.is_floating_point():
        return f"its images are {images.dtype}, not floating point"
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        return f"its labels are {labels.dtype}, not integers"
    if soft is not None and not soft.is_floating_point():
        return f"its soft labels are {soft.dtype}, not floating point"
    if lr is not None and (lr.numel() != 1 or not lr.is_floating_point()):
        return f"its lr is {tuple(lr.shape)} {lr.dtype}, not one number"
    n, k = images.shape[0], info.num_classes
    if n == 0:
        return "it holds no images"
    if k > max(n, len(info.class_names)):
        return f"it says {k} classes but holds {n} images and {len(info.class_names)} class names"
    for name, t in (("images", images), ("soft labels", soft), ("lr", lr)):
        if t is not None and not bool(t.isfinite().all()):
            return f"not every value of its {name} is finite"
    return ""


def load(path: str | Path) -> Distilled:
    """Read an artefact written by :meth:`Distilled.save` (or a run folder's artefact)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(
            f"load() takes the path of an artefact or run folder (str or Path); got {path!r}."
        )
    path = Path(path)
    if path.is_dir() and (path / ARTEFACT_NAME).is_file():  # a run folder
        path = path / ARTEFACT_NAME
    if not path.is_file():
        raise DataError(f"No distilled set at {path}; pass the path of a .safetensors artefact.")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        kind = _zip_kind(path)
        if kind == "npz":  # e.g. an `export --format npz`: data, read as npz:PATH
            raise DataError(
                f"{path} is an .npz file, not a distilled set; as data it is read with "
                f"npz:{path}, and a set's artefact is its .safetensors file."
            ) from None
        if kind == "torch":  # torch.save's format: a run's checkpoint.pt, not its artefact
            raise DataError(
                f"{path} is a torch file (such as a run's checkpoint), not a distilled set; "
                f"give the run folder or its {ARTEFACT_NAME}."
            ) from None
        raise DataError(f"{path} is not a readable safetensors artefact ({exc}).") from None
    if "manifest" not in metadata or "images" not in tensors or "labels" not in tensors:
        raise DataError(f"{path} is a safetensors file but not a datadistill artefact.")
    try:
        manifest = json.loads(metadata["manifest"])
        version = manifest.get("format_version")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path} has a damaged manifest ({exc}).") from None
    if version not in READABLE_FORMATS:  # before reading fields a newer format may change
        raise DataError(
            f"{path} has artefact format {version}; this datadistill reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}, so upgrade the package."
        )
    try:
        info = DatasetInfo.from_dict(manifest["dataset"])
    except (ValueError, KeyError, TypeError, DataError) as exc:
        raise DataError(f"{path} has a damaged manifest ({exc}).") from None
    zca = None
    held = [key for key in _ZCA_KEYS if key in tensors]
    whitening = held or _ZCA_MATRIX_KEY in tensors
    if (info.zca and len(held) < len(_ZCA_KEYS)) or (whitening and not info.zca):
        raise DataError(
            f"{path} is inconsistent: its dataset is {'' if info.zca else 'not '}whitened but "
            f"it holds {len(held)} of the {len(_ZCA_KEYS)} whitening tensors"
            f"{' and a whitening matrix' if _ZCA_MATRIX_KEY in tensors else ''}."
        )
    if held:
        state = {name: tensors[key] for key, name in _ZCA_KEYS.items()}
        d = info.channels * info.image_size[0] * info.image_size[1]
        try:
            if tuple(state["mean"].shape) != (d,):
                raise DataError(
                    f"its ZCA mean has shape {tuple(state['mean'].shape)}, not ({d},) for "
                    f"{info.channels}x{info.image_size[0]}x{info.image_size[1]} images"
                )
            if state["inverse"].dim() == 1:  # format 4's triangle; a 2-D one is read whole
                state["inverse"] = unpack_symmetric(state["inverse"], d)
            if _ZCA_MATRIX_KEY in tensors:  # formats 1-3
                state["matrix"] = tensors[_ZCA_MATRIX_KEY]
            zca = ZCA.from_state_dict(state, eps=float(info.zca_eps or DEFAULT_EPS))
        except DataError as exc:
            raise DataError(f"{path} is inconsistent: {exc}") from None
    images, labels = tensors["images"], tensors["labels"]
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{path} holds {images.shape[0]} images but {labels.shape[0]} labels.")
    soft = tensors.get("soft_labels")
    problem = _tensor_problem(images, labels, soft, tensors.get("lr"), info)
    if zca is not None and not all(bool(t.isfinite().all()) for t in zca.state_dict().values()):
        problem = problem or "its whitening tensors are not finite"
    if problem:
        raise DataError(f"{path} is damaged: {problem}; re-create or download it again.")
    images, labels = images.float(), labels.long()  # (float16 / float64, int32 / uint8 ...)
    soft = None if soft is None else soft.float()
    lr = float(tensors["lr"]) if "lr" in tensors else None
    try:
        return Distilled(
            images=images,
            labels=labels,
            info=info,
            soft_labels=soft,
            lr=lr,
            zca=zca,
            manifest=manifest,
            factor=manifest.get("factor", 1),
        )
    except DataError as exc:
        raise DataError(f"{path} is inconsistent: {exc}") from None


def export(distilled: Distilled, out: str | Path, fmt: str = "png") -> Path:
    """Write un-normalised images as ``png`` folders (one per class) or one ``npz`` file:
    the images a network trains on (a multi-formation set's decoded ones).

    Nothing the images need for training is dropped: the npz holds ``x`` (N, H, W, C)
    uint8, ``y``, ``class_names``, ``allow_flip`` and, when the set has them,
    ``soft_labels`` and ``lr``; a PNG export writes ``labels.json`` beside the class
    folders with the class names, ``allow_flip``, the lr and each file's label and soft
    label. Both read back with :func:`~datadistill.load_dataset` (``npz:PATH``,
    ``imagefolder:PATH``) with their class names, labels and ``allow_flip`` (soft labels
    and the lr are for the user's own training code).
    """
    out, fmt = Path(out), str(fmt).lower()
    if fmt == "png" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        # mixing with an earlier export would leave its images beside these
        what = "is a file" if not out.is_dir() else "is a folder that is not empty"
        raise ConfigError(
            f"{out} already exists and {what}; the PNG export writes a new or empty folder, "
            "so choose a new --out."
        )
    if fmt == "npz":
        if out.name in ("", ".", "..") or out.is_dir():
            raise ConfigError(f"{out} is a folder; give the npz export a file name.")
        out = with_added_suffix(out, ".npz")
        if out.exists():
            raise ConfigError(f"{out} already exists; choose a new --out or delete it.")
    pixels = distilled.pixels(decoded=True)  # (N, C, H, W) in [0, 1]
    arr = (pixels.numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)  # (N, H, W, C)
    _, labels_t, soft = distilled.training_set()
    labels = labels_t.numpy()
    names = list(distilled.info.class_names)
    soft = None if soft is None else soft.detach().float()
    if fmt == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        extras: dict[str, Any] = {
            "class_names": np.array(names, dtype=str),
            "allow_flip": np.bool_(distilled.info.allow_flip),
        }
        if soft is not None:
            extras["soft_labels"] = soft.cpu().numpy()
        if distilled.lr is not None:
            extras["lr"] = np.float32(distilled.lr)
        np.savez_compressed(out, x=arr, y=labels, **extras)
        return out
    if fmt == "png":
        from PIL import Image

        rows = []
        k = distilled.info.num_classes  # Distilled keeps labels below it
        folders = _folder_names([*names, *(str(i) for i in range(len(names), k))])
        for i, (img, y) in enumerate(zip(arr, labels, strict=True)):
            folder = out / folders[int(y)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                folder / f"{i:05d}.png"
            )
            row: dict[str, Any] = {"file": f"{folder.name}/{i:05d}.png", "label": int(y)}
            if soft is not None:
                row["soft_label"] = [float(v) for v in soft[i]]
            rows.append(row)
        head = json.dumps(
            {"class_names": names, "allow_flip": distilled.info.allow_flip, "lr": distilled.lr}
        )[:-1]
        body = ",\n".join(json.dumps(row, separators=(",", ":")) for row in rows)
        (out / "labels.json").write_text(f'{head}, "files": [\n{body}\n]}}\n')  # a row a line
        return out
    raise ConfigError(f"Unknown export format {fmt!r}; choose 'png' or 'npz'.")


def _folder_names(names: list[str]) -> list[str]:
    """One folder name per class: only letters, digits, ``-_.``, no leading dot (a hidden
    folder is not read back, and ``..`` would leave the export), and distinct even where
    two names differ only in the characters replaced or in case."""
    out: list[str] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
        base = base or f"class{i}"
        folder, n = base, 2
        while folder.lower() in seen:
            folder, n = f"{base}_{n}", n + 1
        seen.add(folder.lower())
        out.append(folder)
    return out
