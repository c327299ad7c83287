"""The plain parameterisation: every pixel of every synthetic image is learned."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from datadistill.synthetic.base import SYNSETS, SyntheticSet, hard_labels


@SYNSETS.register("pixels")
class PixelSet(SyntheticSet):
    """Learnable images ``(K * ipc, C, H, W)`` with hard labels, optional soft labels and lr.

    Args:
        images: initial images in model-input space, class-major, ``(K * ipc, C, H, W)``.
        num_classes: K.
        soft_labels: optional initial logits ``(K * ipc, K)``; learned when given.
        lr: optional initial training learning rate, learned (as is, like the MTT paper's
            ``syn_lr``) when given.
    """

    labels: Tensor  # (K * ipc,) int64 hard labels, a buffer

    def __init__(
        self,
        images: Tensor,
        num_classes: int,
        soft_labels: Tensor | None = None,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        self._set_shape(images, num_classes)
        self.images = nn.Parameter(images.detach().clone())
        self.register_buffer("labels", hard_labels(num_classes, self.ipc, images.device))
        self._set_learned(soft_labels, lr, images.device)

    @classmethod
    def from_real(cls, class_images: Tensor, **kwargs: Any) -> PixelSet:
        """Initialise from real images grouped by class, ``(K, ipc, C, H, W)``."""
        k, ipc = class_images.shape[:2]
        return cls(class_images.reshape(k * ipc, *class_images.shape[2:]), k, **kwargs)

    @classmethod
    def from_noise(
        cls,
        num_classes: int,
        ipc: int,
        image_shape: tuple[int, int, int],
        generator: torch.Generator,
        **kwargs: Any,
    ) -> PixelSet:
        """Initialise from standard Gaussian noise (in normalised space)."""
        x = torch.randn(num_classes * ipc, *image_shape, generator=generator)
        return cls(x, num_classes, **kwargs)

    def materialize(self) -> tuple[Tensor, Tensor, Tensor | None]:
        return self.images, self.labels, self.soft_labels

    def class_images(self) -> Tensor:
        return self.images.view(self.num_classes, self.ipc, *self.image_shape)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "name": "pixels", **self._learned_config()}
