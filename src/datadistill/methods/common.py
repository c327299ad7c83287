"""Pieces shared by several methods: synthetic-set initialisation, networks, compilation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from datadistill._device import native_bf16
from datadistill.data import RealData
from datadistill.errors import ConfigError
from datadistill.synthetic import PixelSet

PRECISIONS = ("float32", "bfloat16", "auto")

# Above this many input pixels per call, compiling the embedding pays for its start-up.
COMPILE_MIN_PIXELS = 1_000_000


def check_ipc(real: RealData, ipc: int) -> None:
    """IPC must be >= 1 and no larger than the smallest class of the training split."""
    smallest = min(real.class_counts("train"))
    if not isinstance(ipc, int) or ipc < 1:
        raise ConfigError(f"IPC must be an integer >= 1; got {ipc!r}.")
    if ipc > smallest:
        raise ConfigError(
            f"IPC {ipc} exceeds the smallest class of {real.info.name} ({smallest} training "
            f"images); choose an IPC <= {smallest}."
        )


def init_synset(real: RealData, ipc: int, init: str, generator: torch.Generator) -> PixelSet:
    """Synthetic pixels from ``ipc`` random real images per class, or Gaussian noise."""
    check_ipc(real, ipc)
    if init == "noise":
        info = real.info
        shape = (info.channels, *info.image_size)
        return PixelSet.from_noise(info.num_classes, ipc, shape, generator)  # type: ignore[arg-type]
    images = torch.stack(
        [real.sample(c, ipc, generator) for c in range(real.info.num_classes)]
    ).cpu()
    return PixelSet.from_real(images)


def maybe_compile(
    fn: Callable[..., torch.Tensor], mode: str, device: torch.device, pixels: int
) -> Callable[..., torch.Tensor]:
    """``torch.compile`` ``fn`` for "yes", or for "auto" on CUDA / large inputs."""
    use = mode == "yes" or (
        mode == "auto" and (device.type == "cuda" or pixels >= COMPILE_MIN_PIXELS)
    )
    if not use:
        return fn
    return torch.compile(fn, dynamic=False)  # type: ignore[return-value]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of a no-grad real-data pass: "auto" is bfloat16 where ``device``
    computes it natively (see :func:`datadistill._device.native_bf16`), else float32."""
    if precision == "bfloat16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def autocast_to(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (a no-op context for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
