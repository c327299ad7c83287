"""Per-class parameter gradients in one batched pass (``torch.func.vmap`` over classes).

Gradient matching compares, class by class, the gradient of the training loss on real
images with the gradient on synthetic images. The reference code runs one forward and
backward per class; here the class dimension is vectorised: ``vmap`` turns the network's
layers into grouped operations over K copies of the same weights, so the K gradients come
from one call. The result is differentiable with respect to the images (needed for the
synthetic side), through ordinary autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def detached_params(net: nn.Module) -> dict[str, Tensor]:
    """The network's parameters as a name -> tensor dict, cut from its autograd graph."""
    return {name: p.detach() for name, p in net.named_parameters()}


def per_class_grads(
    net: nn.Module,
    params: dict[str, Tensor],
    images: Tensor,
    labels: Tensor,
    *,
    soft_labels: Tensor | None = None,
) -> list[Tensor]:
    """Gradients of the cross-entropy of each class's batch with respect to ``params``.

    Args:
        net: the network, used through :func:`torch.func.functional_call`; it must be
            free of in-place buffer updates in its current mode (batch norm in eval mode).
        params: name -> tensor, e.g. from :func:`detached_params`.
        images: (K, B, C, H, W), one batch per class.
        labels: (K, B) integer labels.
        soft_labels: optional (K, B, num_classes) target probabilities.
    Returns:
        one tensor per parameter, in ``params`` order, shaped ``(K, *param.shape)``.
    """
    buffers = dict(net.named_buffers())
    names = list(params)

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Any) -> Tensor:
        out = functional_call(net, (p, buffers), (x,))
        return F.cross_entropy(out, t if t is not None else y)

    g = vmap(grad(loss), in_dims=(None, 0, 0, 0 if soft_labels is not None else None))
    grads = g(params, images, labels, soft_labels)
    return [grads[n] for n in names]


def loop_class_grads(
    net: nn.Module, images: Tensor, labels: Tensor, *, create_graph: bool = False
) -> list[Tensor]:
    """The reference code's way: one forward and backward per class (the tests' yardstick).
    Same output layout as :func:`per_class_grads`."""
    params = list(net.parameters())
    per_class = []
    for c in range(images.shape[0]):
        out = net(images[c])
        loss = F.cross_entropy(out, labels[c])
        per_class.append(torch.autograd.grad(loss, params, create_graph=create_graph))
    return [torch.stack([gc[i] for gc in per_class]) for i in range(len(params))]
