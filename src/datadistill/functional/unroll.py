"""Unrolled SGD on a flat parameter vector, and the gradient of a loss on its end point.

Trajectory matching trains a student network for N steps of plain SGD on synthetic data,

    theta_{i+1} = theta_i - lr * g_i,   g_i = grad_theta CE(f(theta_i; x_i), y_i),

and differentiates a loss L(theta_N) with respect to the synthetic images, (soft) labels and
``lr``. Two ways give the same numbers:

- :func:`unroll_full` keeps the whole graph and calls ``backward`` once (the reference
  implementation: memory grows with N, one set of activations per step);
- :func:`unroll_constant_memory` runs the steps without a graph, keeps only the N flat
  parameter vectors (a few MB for a ConvNet), then walks back one step at a time with the
  adjoint ``lam_i = dL/dtheta_i``:

      dL/dx_i   = -lr * (d g_i / d x_i)^T lam_{i+1}
      dL/dlr   += -<g_i, lam_{i+1}>
      lam_i     = lam_{i+1} - lr * H_i lam_{i+1}      (H_i lam: a Hessian-vector product)

  which is the chain rule of the full unroll reordered (TESLA, Cui et al. 2023): one step's
  activations are alive at a time, so peak memory does not grow with N.

Each step's inputs come from a ``batch_fn(i, images, soft) -> (x, y_or_probs)`` that must
be a deterministic function of the step index (re-drawing the same mini-batch and
augmentation when the constant-memory pass recomputes step i).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

BatchFn = Callable[[int, Tensor, Tensor | None], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class FlatParams:
    """Names and shapes of a network's parameters, to view a flat vector as a dict."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, net: nn.Module) -> FlatParams:
        items = list(net.named_parameters())
        return cls(tuple(n for n, _ in items), tuple(tuple(p.shape) for _, p in items))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        pieces = flat.split(sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])


def student_loss(net: nn.Module, layout: FlatParams, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of ``net`` with flat parameters ``theta``; ``y`` is integer labels or
    (B, K) target probabilities."""
    out = functional_call(net, layout.unflatten(theta), (x,))
    return F.cross_entropy(out, y)


def matching_loss(theta_end: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """MTT's normalised distance ||theta_end - target||^2 / ||start - target||^2."""
    return ((theta_end - target) ** 2).sum() / ((start - target) ** 2).sum()


@dataclass
class UnrollResult:
    loss: float
    grad_images: Tensor
    grad_soft: Tensor | None
    grad_lr: Tensor


def unroll_full(
    net: nn.Module,
    layout: FlatParams,
    start: Tensor,
    target: Tensor,
    images: Tensor,
    soft: Tensor | None,
    lr: Tensor,
    steps: int,
    batch_fn: BatchFn,
) -> UnrollResult:
    """Backpropagation through the whole unroll (the reference way)."""
    leaves = [images, lr] + ([soft] if soft is not None else [])
    theta = start.detach().requires_grad_(True)
    for i in range(steps):
        x, y = batch_fn(i, images, soft)
        (g,) = torch.autograd.grad(student_loss(net, layout, theta, x, y), theta, create_graph=True)
        theta = theta - lr * g
    loss = matching_loss(theta, start, target)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return UnrollResult(
        float(loss.detach()),
        _or_zeros(grads[0], images),
        _or_zeros(grads[2], soft) if soft is not None else None,
        _or_zeros(grads[1], lr),
    )


def unroll_constant_memory(
    net: nn.Module,
    layout: FlatParams,
    start: Tensor,
    target: Tensor,
    images: Tensor,
    soft: Tensor | None,
    lr: Tensor,
    steps: int,
    batch_fn: BatchFn,
) -> UnrollResult:
    """The same gradients as :func:`unroll_full`, one step's activations at a time."""
    images_d = images.detach()
    soft_d = soft.detach() if soft is not None else None
    lr_d = lr.detach()
    thetas = [start.detach()]
    for i in range(steps):  # forward: parameters only, no graph kept
        theta = thetas[-1].detach().requires_grad_(True)
        x, y = batch_fn(i, images_d, soft_d)
        (g,) = torch.autograd.grad(student_loss(net, layout, theta, x, y), theta)
        thetas.append(thetas[-1] - lr_d * g)
    end = thetas[-1].detach().requires_grad_(True)
    loss = matching_loss(end, start.detach(), target.detach())
    (lam,) = torch.autograd.grad(loss, end)
    grad_images = torch.zeros_like(images_d)
    grad_soft = torch.zeros_like(soft_d) if soft_d is not None else None
    grad_lr = torch.zeros_like(lr_d)
    for i in reversed(range(steps)):  # backward: recompute step i, pull the adjoint through
        theta = thetas[i].detach().requires_grad_(True)
        img = images_d.detach().requires_grad_(True)
        sft = soft_d.detach().requires_grad_(True) if soft_d is not None else None
        x, y = batch_fn(i, img, sft)
        (g,) = torch.autograd.grad(student_loss(net, layout, theta, x, y), theta, create_graph=True)
        inputs = [theta, img] + ([sft] if sft is not None else [])
        gl = (g * lam).sum()
        d = torch.autograd.grad(gl, inputs, allow_unused=True)
        with torch.no_grad():
            grad_lr -= gl.detach()
            grad_images -= lr_d * _or_zeros(d[1], images_d)
            if grad_soft is not None:
                grad_soft -= lr_d * _or_zeros(d[2], grad_soft)
            lam = lam - lr_d * d[0]
        del thetas[i + 1], g, gl, d  # free what is no longer needed
    return UnrollResult(float(loss.detach()), grad_images, grad_soft, grad_lr)


def _or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
    return g if g is not None else torch.zeros_like(like)
