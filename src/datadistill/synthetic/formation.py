"""Multi-formation (Kim et al., ICML 2022, "IDC"): each stored image holds ``factor**2``
training images at ``1/factor`` of the resolution.

A stored ``(C, H, W)`` image is cut into a ``factor x factor`` grid of ``(C, H/factor,
W/factor)`` tiles, and each tile is upsampled back to ``(H, W)`` (bilinear) to train on.
The storage budget (what IPC counts, what the artefact holds) stays ``ipc`` images per
class while the network trains on ``ipc * factor**2``: on small images whose classes need
more examples more than they need full resolution, that trade pays (MNIST at IPC 10 with
``factor`` 2: 40 random real images per class at 14x14 reached 93.0% on the validation
split under the ``dc`` protocol, 10 at 28x28 88.0%; one network each, benchmarks/NOTES.md,
stop 29). The trade has a limit: distilled with DM at MNIST IPC 1, ``factor`` 4 (sixteen
7x7 tiles) scored 88.3% on validation against 91.3% for ``factor`` 2 (stop 35).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.errors import ConfigError, check
from datadistill.synthetic.base import SYNSETS, SyntheticSet, hard_labels


def check_factor(factor: object, image_size: tuple[int, int]) -> None:
    """``factor`` must be an int >= 1 dividing both sides of the images."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ConfigError(f"The multi-formation factor must be an integer >= 1; got {factor!r}.")
    h, w = image_size
    if h % factor or w % factor:
        divisors = [d for d in range(2, min(h, w) + 1) if h % d == 0 and w % d == 0]
        hint = f"choose 1 or one of {divisors}" if divisors else "choose 1"
        raise ConfigError(
            f"A multi-formation factor of {factor} does not divide the {h}x{w} images; {hint}."
        )


def decode(images: Tensor, factor: int) -> Tensor:
    """Stored images ``(N, C, H, W)`` -> training images ``(N * factor**2, C, H, W)``.

    The tiles of one stored image come out consecutively, row by row, so a class-major
    stored set decodes to a class-major training set. Differentiable; ``factor`` 1 returns
    ``images`` itself.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = h // factor, w // factor
    tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_rows(images: Tensor, idx: Tensor, factor: int) -> Tensor:
    """``decode(images, factor)[idx]``, decoding only the stored images ``idx`` falls in."""
    if factor == 1:
        return images[idx]
    per = factor * factor
    rows, inverse = (idx // per).unique(return_inverse=True)
    tiles = decode(images[rows], factor).view(len(rows), per, *images.shape[1:])
    return tiles[inverse, idx % per]


def at_tile_resolution(images: Tensor, factor: int) -> Tensor:
    """Each image ``(N, C, H, W)`` as a multi-formation set trains on it: area-downsampled
    to ``1/factor`` and upsampled back (bilinear), what ``decode(encode(x))`` gives each
    image (``images`` itself for ``factor`` 1)."""
    if factor == 1:
        return images
    h, w = images.shape[2:]
    small = F.interpolate(images, size=(h // factor, w // factor), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def encode(images: Tensor, factor: int) -> Tensor:
    """Training-size images ``(N * factor**2, C, H, W)`` -> stored images ``(N, C, H, W)``:
    each group of ``factor**2`` consecutive images is area-downsampled and tiled into one.
    ``decode(encode(x))`` is ``x`` at ``1/factor`` of its resolution."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    check(
        m % (factor * factor) == 0,
        f"{m} images do not fill stored images of {factor * factor} tiles each.",
    )
    th, tw = h // factor, w // factor
    small = F.interpolate(images, size=(th, tw), mode="area")
    grid = small.reshape(m // (factor * factor), factor, factor, c, th, tw)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(m // (factor * factor), c, h, w)


@SYNSETS.register("multiformation")
class MultiFormationSet(SyntheticSet):
    """Learnable stored images ``(K * ipc, C, H, W)``, each decoding to ``factor**2``
    training images with its hard label (see :func:`decode`), and optionally its learned
    soft label and a learned training lr (trajectory matching), as in :class:`PixelSet`.

    Args:
        images: initial stored images in model-input space, class-major.
        num_classes: K.
        factor: tiles per side of a stored image (1 is the plain pixel set).
        soft_labels: optional initial logits ``(K * ipc, K)``, one row per stored image
            (its tiles share it, as they share its hard label); learned when given.
        lr: optional initial training learning rate, learned when given.
    """

    labels: Tensor  # (K * ipc,) int64 hard labels of the stored images, a buffer

    def __init__(
        self,
        images: Tensor,
        num_classes: int,
        factor: int,
        soft_labels: Tensor | None = None,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        self._set_shape(images, num_classes)
        check_factor(factor, (images.shape[2], images.shape[3]))
        self.factor = factor
        self.images = nn.Parameter(images.detach().clone())
        self.register_buffer("labels", hard_labels(num_classes, self.ipc, images.device))
        self._set_learned(soft_labels, lr, images.device)

    @classmethod
    def from_real(cls, class_images: Tensor, factor: int, **kwargs: Any) -> MultiFormationSet:
        """Start from real images grouped by class, ``(K, ipc * factor**2, C, H, W)``: each
        stored image tiles ``factor**2`` of them, downsampled."""
        k, m = class_images.shape[:2]
        check(
            m % (factor * factor) == 0,
            f"{m} images per class do not fill stored images of {factor * factor} tiles each.",
        )
        stored = encode(class_images.reshape(k * m, *class_images.shape[2:]), factor)
        return cls(stored, k, factor, **kwargs)

    def materialize(self) -> tuple[Tensor, Tensor, Tensor | None]:
        return decode_set(self.images, self.labels, self.soft_labels, self.factor)

    def stored(self) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.images, self.labels, self.soft_labels

    def config(self) -> dict[str, Any]:
        out = {**super().config(), "name": "multiformation", "factor": self.factor}
        learned = self._learned_config()  # named only when learned: DM / DC sets keep theirs
        return {**out, **learned} if any(learned.values()) else out


def decode_set(
    images: Tensor, labels: Tensor, soft_labels: Tensor | None, factor: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """A stored set ``(images, labels, soft labels or None)`` as its training set: the
    images decoded, each label repeated for its image's tiles (the same tensors for
    ``factor`` 1); soft labels with one row per training image already (a teacher's, see
    :mod:`datadistill.labels`) are kept as they are. What a multi-formation set trains on,
    and what its artefact decodes to."""
    if factor == 1:
        return images, labels, soft_labels
    soft = soft_labels
    if soft is not None and soft.shape[0] == images.shape[0]:  # one per stored image
        soft = decoded_labels(soft, factor)
    return decode(images, factor), decoded_labels(labels, factor), soft


def decoded_labels(labels: Tensor, factor: int) -> Tensor:
    """Per-stored-image labels (hard ``(N,)`` or soft ``(N, K)``) for the decoded set."""
    return labels.repeat_interleave(factor * factor, dim=0)
