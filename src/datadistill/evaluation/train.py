"""Train a fresh network on a (small) labelled set and measure its accuracy."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datadistill._device import COMPILE_CHOICES, compile_choice, compiler_works
from datadistill.augment import DSA
from datadistill.errors import ConfigError
from datadistill.functional.class_grads import stem_logits
from datadistill.models.convnet import ConvNet

# With compile="auto" a ConvNet training on CPU compiles when it processes at least this
# many input pixels (images x epochs x height x width): compiling costs 10-40 s once per
# process and makes each step 1.2-1.3x faster (NOTES.md, stop 41), so an evaluation at
# MNIST IPC 10 (100 x 300 x 784 = 23.5 M) compiles, one at IPC 1 (2.4 M) or on
# scikit-learn's digits does not. GPUs: not measured yet, so "auto" stays eager there.
TRAIN_COMPILE_MIN_PIXELS = 20_000_000
COMPILE_ENV = "DATADISTILL_TRAIN_COMPILE"  # the default of ``compile`` (auto / yes / no)
_compiled: dict[str, Callable[..., Tensor]] = {}  # one compiled function per process
# from 2.5 Dynamo inlines nn.Modules (inline_inbuilt_nn_modules), so a module passed to a
# compiled function is an input, not a constant: a new network does not compile again
_TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out


def label_loss(logits: Tensor, labels: Tensor, soft: Tensor | None) -> Tensor:
    """Cross-entropy with hard labels, or with the softmax of learned soft-label logits."""
    if soft is None:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, soft.softmax(dim=1))


def train_network(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    soft_labels: Tensor | None = None,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    decay_at: float = 0.5,
    dsa: DSA | None = None,
    max_steps: int | None = None,
    micro_batch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    compile: str | None = None,
) -> nn.Module:
    """SGD on ``images`` (N, C, H, W) / ``labels`` (N,), lr x0.1 after ``decay_at`` of the epochs.

    Shuffling and augmentation draw only from ``generator``; tensors stay on their device.
    ``max_steps`` caps the number of optimiser steps (brief training for feature networks).
    ``micro_batch`` splits each batch into chunks whose gradients are accumulated: the same
    update for networks without batch norm (every sample is normalised on its own), and
    about 1.5x faster on CPU, where a chunk's activations stay in cache. Default: 16 on
    CPU for such networks on images of at least 16x16 pixels, off otherwise.
    ``optimizer`` continues an existing optimiser (its lr as it stands) instead of a new one.
    ``compile`` ("auto", "yes", "no"; None: ``$DATADISTILL_TRAIN_COMPILE``, else "auto")
    runs the forward and backward of the full-size batches (or micro-batches) through
    ``torch.compile`` (a ConvNet through
    :func:`~datadistill.functional.class_grads.stem_logits`, as DC's network training
    does): the same arithmetic in fused kernels, 1.2-1.3x faster on CPU. "auto" compiles a
    long ConvNet training on CPU (:func:`compiles`). Each step then rounds differently
    from an eager one, so a long training ends where an eager one on another machine would.
    """
    opt = optimizer or torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    n = images.shape[0]
    decay_epoch = int(epochs * decay_at)
    steps = 0
    chunk = micro_batch if micro_batch is not None else default_micro_batch(model, images)
    work = min(epochs * n, max_steps * batch_size if max_steps is not None else epochs * n)
    compiled = compiles(model, images, work, compile)
    # one input shape compiled: the micro-batch (or batch) size; a remainder runs eagerly
    full = min(batch_size, n)
    main = chunk if 0 < chunk < full else full
    fast = compiled_forward(model) if compiled else _forward
    model.train()
    for epoch in range(epochs):
        if epoch == decay_epoch and epoch > 0:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = images[idx]
            if dsa is not None:
                x = dsa.augment(x, generator)  # one family per batch, as the reference
            soft = soft_labels[idx] if soft_labels is not None else None
            opt.zero_grad(set_to_none=True)
            for xc, yc, sc in _chunks(x, labels[idx], soft, chunk):
                fwd = fast if len(xc) == main else _forward
                loss = label_loss(fwd(model, xc), yc, sc) * (xc.shape[0] / x.shape[0])
                loss.backward()
            opt.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                return model
    return model


def compiles(model: nn.Module, images: Tensor, work: int, mode: str | bool | None) -> bool:
    """Whether a training of ``model`` on ``work`` images shaped as ``images`` runs compiled:
    ``mode`` "yes", or "auto" for a ConvNet on CPU whose training reads at least
    ``TRAIN_COMPILE_MIN_PIXELS`` input pixels, where the compiler works and a new network
    does not compile again (torch 2.5 or newer). ``mode`` None reads
    ``$DATADISTILL_TRAIN_COMPILE`` (default "auto")."""
    if mode is None:
        mode = os.environ.get(COMPILE_ENV, "auto").strip().lower() or "auto"
    mode = compile_choice(mode)
    if mode not in COMPILE_CHOICES:
        raise ConfigError(
            f"compile (or ${COMPILE_ENV}) must be one of {', '.join(COMPILE_CHOICES)}; "
            f"got {mode!r}."
        )
    if mode != "auto":
        return mode == "yes"
    pixels = work * images[0, 0].numel() if images.dim() == 4 and len(images) else 0
    return (
        isinstance(model, ConvNet)
        and images.device.type == "cpu"
        and pixels >= TRAIN_COMPILE_MIN_PIXELS
        and _TORCH >= (2, 5)
        and compiler_works(images.device)
    )


def compiled_forward(model: nn.Module) -> Callable[[nn.Module, Tensor], Tensor]:
    """The process-wide compiled ``f(model, x)``: ``stem_logits`` for ConvNets, else
    ``model(x)``; every network of the process shares it."""
    plain: Any = stem_logits if isinstance(model, ConvNet) else _forward
    key = plain.__name__
    if key not in _compiled:
        _compiled[key] = torch.compile(plain, dynamic=False)
    return _compiled[key]


def default_micro_batch(model: nn.Module, images: Tensor) -> int:
    """16 on CPU for networks without batch norm on images of 16x16 pixels or more, else 0
    (no splitting: small images' activations fit in cache whole, and chunks only add
    per-call overhead; measured 1.3x slower on 8x8 digits)."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    large = images.dim() == 4 and images.shape[-1] * images.shape[-2] >= 256
    return 16 if images.device.type == "cpu" and large and not has_bn else 0


def _chunks(
    x: Tensor, y: Tensor, soft: Tensor | None, size: int
) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    if size <= 0 or x.shape[0] <= size:
        return [(x, y, soft)]
    softs = soft.split(size) if soft is not None else [None] * len(x.split(size))
    return list(zip(x.split(size), y.split(size), softs, strict=True))


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 0) -> float:
    """Top-1 accuracy as a fraction in [0, 1], in eval mode (batches of 50 on CPU)."""
    batch_size = batch_size or (50 if images.device.type == "cpu" else 1000)
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    model.train()
    return correct / max(1, images.shape[0])
