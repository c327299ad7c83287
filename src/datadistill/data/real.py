"""RealData: the real train / val / test tensors of a dataset and per-class sampling.

``sample`` is the one way distillation methods should touch real images, so that a
streaming backend can replace this in-memory one later.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from datadistill.data.info import DatasetInfo
from datadistill.data.zca import ZCA
from datadistill.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class RealData:
    """Images in model-input space (normalised, optionally ZCA-whitened) and labels.

    ``*_x`` are float32 (N, C, H, W); ``*_y`` are int64 (N,) in 0..K-1. Per-class index
    tensors are computed once per split and kept on the CPU; do not modify the tensors
    in place.
    """

    def __init__(
        self,
        info: DatasetInfo,
        train_x: Tensor,
        train_y: Tensor,
        val_x: Tensor,
        val_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        zca: ZCA | None = None,
    ) -> None:
        shape = (info.channels, *info.image_size)
        splits = (("train", train_x, train_y), ("val", val_x, val_y), ("test", test_x, test_y))
        for split, x, y in splits:
            if x.dim() != 4 or tuple(x.shape[1:]) != shape or y.shape != (x.shape[0],):
                raise ConfigError(
                    f"The {split} split must be images (N, {', '.join(map(str, shape))}) and "
                    f"labels (N,); got {tuple(x.shape)} and {tuple(y.shape)}."
                )
        if info.zca != (zca is not None):
            raise ConfigError("info.zca must be true exactly when a ZCA transform is given.")
        self.info = info
        self.train_x, self.train_y = train_x, train_y
        self.val_x, self.val_y = val_x, val_y
        self.test_x, self.test_y = test_x, test_y
        self.zca = zca
        self._indices: dict[str, list[Tensor]] = {}  # split -> K index tensors (CPU)
        self._padded: tuple[Tensor, Tensor] | None = None  # (K, L) train indices, (K,) counts
        # the training images this object was copied from by ``to`` (see ``source_train_x``)
        self._origin: weakref.ref[Tensor] | None = None
        # how load_dataset made these data (name, val_size, max_train, normalization when
        # not "train"): an artefact records it, so that the data can be loaded again; and
        # "digest", RawData.digest() of the files read (before splits and normalisation),
        # to tell whether data loaded again are the same
        self.options: dict[str, object] | None = None

    # ------------------------------------------------------------------ structure

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def digest(self) -> str | None:
        """``RawData.digest`` of the files :func:`load_dataset` read (``options["digest"]``);
        None for data built without it."""
        digest = (self.options or {}).get("digest")
        return digest if isinstance(digest, str) else None

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """Images (N, C, H, W) and labels (N,) of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in SPLITS:
            raise ConfigError(f"Unknown split {name!r}; valid splits: {', '.join(SPLITS)}.")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def class_indices(self, split: str = "train") -> list[Tensor]:
        """K int64 CPU tensors: the positions of each class's examples in ``split``."""
        if split not in self._indices:
            y = self.split(split)[1].cpu()
            order = torch.argsort(y, stable=True)
            counts = torch.bincount(y, minlength=self.num_classes).tolist()
            self._indices[split] = list(torch.split(order, counts))
        return list(self._indices[split])

    def class_counts(self, split: str = "train") -> list[int]:
        """Examples per class in ``split``, a list of K ints."""
        return [len(i) for i in self.class_indices(split)]

    # ------------------------------------------------------------------ sampling

    def sample(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` random train images of class ``c`` without replacement, (n, C, H, W).

        If the class has fewer than ``n`` images, all of them are returned, shuffled.
        Only ``generator`` is used (never the global RNG).
        """
        indices = self.class_indices("train")
        if not 0 <= c < len(indices):
            raise ConfigError(f"Class index must be in 0..{len(indices) - 1}. Got {c!r} instead.")
        if n < 0:
            raise ConfigError(f"The number of images to sample must be >= 0. Got {n!r} instead.")
        pool = indices[c]
        pos = torch.randperm(len(pool), generator=generator, device=generator.device)[:n]
        return self.train_x[pool[pos.cpu()].to(self.device)]

    def _padded_train(self) -> tuple[Tensor, Tensor]:
        if self._padded is None:
            indices = self.class_indices("train")
            counts = torch.tensor([len(i) for i in indices], dtype=torch.int64)
            padded = torch.zeros(len(indices), int(counts.max()), dtype=torch.int64)
            for k, idx in enumerate(indices):
                padded[k, : len(idx)] = idx
            self._padded = (padded, counts)
        return self._padded

    def sample_per_class(self, n: int, generator: torch.Generator) -> Tensor:
        """One random draw per class, batched: (K, m, C, H, W) with m = min(n, largest
        class count). Within a class the draw is without replacement; a class smaller than
        m contributes all its images in random order, cycled to fill its m slots (so each
        of its images appears m // count or m // count + 1 times), instead of capping every
        class at the smallest one. Uses only ``generator``."""
        return self.train_images(self.sample_indices_per_class(n, generator))

    def require_train_images(self) -> None:
        """Raise a :class:`DataError` naming the first class without training images: every
        class needs one to be sampled from."""
        counts = self._padded_train()[1]
        if int(counts.min()) == 0:
            empty = int((counts == 0).nonzero()[0])
            raise DataError(
                f"Class {empty} has no training images to sample from; every class needs "
                "at least one."
            )

    def train_images(self, idx: Tensor) -> Tensor:
        """The training images at positions ``idx`` (any shape, int64): ``(*idx.shape, C,
        H, W)``, e.g. (K, m, C, H, W) for the indices :meth:`sample_indices_per_class`
        draws or a method picked from :meth:`class_indices`."""
        flat = self.train_x[idx.reshape(-1).to(self.device)]
        return flat.reshape(*idx.shape, *self.train_x.shape[1:])

    def sample_indices_per_class(self, n: int, generator: torch.Generator) -> Tensor:
        """The training-split positions of :meth:`sample_per_class`'s draw: (K, m) int64
        on the CPU, row k holding class k's."""
        if n < 0:
            raise ConfigError(f"The number of images to sample must be >= 0. Got {n!r} instead.")
        padded, counts = self._padded_train()  # (K, L), (K,)
        k, length = padded.shape
        m = min(n, length)
        keys = torch.rand(k, length, generator=generator, device=generator.device).cpu()
        keys.masked_fill_(torch.arange(length) >= counts[:, None], 2.0)  # padding sorts last
        if m > 0:
            self.require_train_images()
        if m <= int(counts.min()):  # every class has m images: a partial sort suffices
            pos = keys.topk(m, dim=1, largest=False).indices  # (K, m), random order per row
        else:
            order = keys.argsort(dim=1)  # (K, L): each class's positions, shuffled, first
            pos = order.gather(1, torch.arange(m)[None, :] % counts[:, None])
        return padded.gather(1, pos)  # (K, m)

    # ------------------------------------------------------------------ pixel space

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel mean and std as (C, 1, 1) tensors like ``like``."""
        mean = torch.tensor(self.info.mean, dtype=like.dtype, device=like.device)
        std = torch.tensor(self.info.std, dtype=like.dtype, device=like.device)
        return mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def denormalize(self, x: Tensor) -> Tensor:
        """Model-input space -> pixels in [0, 1]: undo ZCA, then the normalisation; clamped.

        ``x`` is (N, C, H, W) or (C, H, W); the result has the same shape.
        """
        return to_pixels(x, self.info, self.zca)

    def normalize(self, pixels: Tensor) -> Tensor:
        """Pixels in [0, 1] -> model-input space; the inverse of :meth:`denormalize`
        (without its clamp). (N, C, H, W) or (C, H, W) -> same shape."""
        mean, std = self._stats(pixels)
        x = (pixels - mean) / std
        if self.zca is not None:
            z = self.zca
            x = z.transform(x[None])[0] if x.dim() == 3 else z.transform(x)
        return x

    # ------------------------------------------------------------------ misc

    def __getstate__(self) -> dict[str, object]:
        # a weak reference does not cross processes (expert workers get a pickled copy),
        # and the tensor it names would not be the same object there anyway
        return {**self.__dict__, "_origin": None}

    @property
    def source_train_x(self) -> Tensor:
        """The training images this data were copied from by :meth:`to` (while they live),
        else ``train_x``: one identity for the same data on any device, for caches keyed by
        the data (a CUDA copy made per run is a new tensor each time)."""
        origin = None if self._origin is None else self._origin()
        return self.train_x if origin is None else origin

    def to(self, device: torch.device | str) -> RealData:
        """A new RealData with every tensor (and the ZCA) on ``device``."""
        moved = RealData(
            self.info,
            self.train_x.to(device),
            self.train_y.to(device),
            self.val_x.to(device),
            self.val_y.to(device),
            self.test_x.to(device),
            self.test_y.to(device),
            None if self.zca is None else self.zca.to(device),
        )
        moved._origin = weakref.ref(self.source_train_x)
        moved.options = None if self.options is None else dict(self.options)
        return moved

    def __repr__(self) -> str:
        i = self.info
        return (
            f"RealData({i.name!r}, classes={i.num_classes}, shape={(i.channels, *i.image_size)}, "
            f"train={len(self.train_y)}, val={len(self.val_y)}, test={len(self.test_y)}, "
            f"zca={i.zca}, device={self.device})"
        )


def require_real_data(real: object, caller: str) -> None:
    """A one-sentence ConfigError when an API function is given something else as ``real``."""
    if not isinstance(real, RealData):
        raise ConfigError(
            f"{caller}() takes the real data as a RealData, got {type(real).__name__}; load it "
            "with datadistill.load_dataset(name, root)."
        )


def to_pixels(x: Tensor, info: DatasetInfo, zca: ZCA | None) -> Tensor:
    """Model-input space -> pixels in [0, 1] for data described by ``info`` / ``zca``:
    undo ZCA, then the normalisation; clamped. (N, C, H, W) or (C, H, W) -> same shape."""
    if zca is not None:
        x = zca.inverse_transform(x[None])[0] if x.dim() == 3 else zca.inverse_transform(x)
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)
