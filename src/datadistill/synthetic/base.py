"""The SyntheticSet contract.

A SyntheticSet owns the learnable tensors of a distilled dataset and knows how to
``materialize()`` images and labels from them. Methods that only need
``materialize()`` work with every parameterisation; ``parameters()`` feeds the optimiser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from datadistill.errors import check
from datadistill.registry import Registry

SYNSETS: Registry[type[SyntheticSet]] = Registry("synthetic parameterisation")


class SyntheticSet(nn.Module):
    """Base class: ``num_classes`` classes with ``ipc`` images each, class-major order."""

    num_classes: int
    ipc: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    factor: int = 1  # training images per stored image, per side (multi-formation)

    def _set_shape(self, images: Tensor, num_classes: int) -> None:
        """Check class-major ``(K * ipc, C, H, W)`` images; set ``num_classes``, ``ipc`` and
        ``image_shape`` from them."""
        check(
            images.dim() == 4, f"Synthetic images must be (N, C, H, W); got {tuple(images.shape)}."
        )
        check(
            images.shape[0] % num_classes == 0,
            f"{images.shape[0]} synthetic images do not split evenly over {num_classes} classes.",
        )
        self.num_classes = num_classes
        self.ipc = images.shape[0] // num_classes
        self.image_shape = tuple(images.shape[1:])  # type: ignore[assignment]

    def materialize(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Return ``(images (N, C, H, W), labels (N,) int64, soft_labels (N, K) or None)``."""
        raise NotImplementedError

    def stored(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """What the artefact keeps: the stored images, their labels and soft labels, from
        which :func:`~datadistill.synthetic.formation.decode` with ``factor`` rebuilds
        :meth:`materialize` (the same tensors where ``factor`` is 1)."""
        return self.materialize()

    def class_images(self) -> Tensor:
        """Training images grouped by class, ``(K, ipc * factor**2, C, H, W)``,
        differentiable."""
        images, _, _ = self.materialize()
        return images.reshape(self.num_classes, self.ipc * self.factor**2, *self.image_shape)

    def learned_lr(self) -> float | None:
        """A learned training learning rate (trajectory matching), or None."""
        lr = getattr(self, "lr", None)
        return float(lr.detach()) if isinstance(lr, Tensor) else None

    def _set_learned(
        self, soft_labels: Tensor | None, lr: float | None, device: torch.device
    ) -> None:
        """Register the optional learned ``soft_labels`` (logits, one row per stored image)
        and training ``lr`` (a scalar, learned as is, like the MTT paper's ``syn_lr``)."""
        self.soft_labels = (
            nn.Parameter(soft_labels.detach().clone()) if soft_labels is not None else None
        )
        self.lr = nn.Parameter(torch.tensor(float(lr), device=device)) if lr is not None else None

    def _learned_config(self) -> dict[str, Any]:
        return {
            "soft_labels": getattr(self, "soft_labels", None) is not None,
            "learned_lr": getattr(self, "lr", None) is not None,
        }

    def config(self) -> dict[str, Any]:
        """JSON-able description stored in the artefact manifest."""
        return {"name": type(self).__name__, "ipc": self.ipc, "num_classes": self.num_classes}


def create_synset(name: str, **kwargs: Any) -> SyntheticSet:
    """Create a registered parameterisation by name."""
    return SYNSETS.get(name)(**kwargs)


def hard_labels(num_classes: int, ipc: int, device: torch.device | None = None) -> Tensor:
    """Class-major labels ``[0]*ipc + [1]*ipc + ...``, shape ``(num_classes * ipc,)``."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)
