"""Re-initialise a model from an explicit ``torch.Generator`` (never the global RNG)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

from datadistill.errors import ConfigError


def _reset_weight_and_bias(module: nn.Linear | _ConvNd, generator: torch.Generator) -> None:
    # PyTorch's default for Linear / Conv: kaiming_uniform(a=sqrt(5)) on the weight, i.e.
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias. The weight is
    # drawn into a contiguous buffer so channels_last weights get the same values.
    weight = module.weight
    # Values are drawn on the generator's device (the CPU) and copied, so that a model on
    # CUDA gets the same values as on the CPU.
    tmp = torch.empty(weight.shape, dtype=weight.dtype, device=generator.device)
    nn.init.kaiming_uniform_(tmp, a=math.sqrt(5), generator=generator)
    weight.copy_(tmp)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        tmp_b = torch.empty(module.bias.shape, dtype=module.bias.dtype, device=generator.device)
        nn.init.uniform_(tmp_b, -bound, bound, generator=generator)
        module.bias.copy_(tmp_b)


def _reset_affine(module: nn.Module) -> None:
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if weight is not None:
        nn.init.ones_(weight)
    if bias is not None:
        nn.init.zeros_(bias)


def reset_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter and buffer of ``model`` in place, drawing only from
    ``generator``.

    The distributions are PyTorch's defaults: ``kaiming_uniform_(a=sqrt(5))`` weights and
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) biases for ``Linear`` and ``Conv*``; ones / zeros for
    the affine parameters of BatchNorm / InstanceNorm / GroupNorm / LayerNorm, whose running
    statistics are reset; N(0, 1) for ``Embedding``. Modules are visited in
    ``model.modules()`` order, which for the builtin models is construction order, so
    ``reset_parameters(m, torch.Generator().manual_seed(s))`` reproduces the weights that
    ``torch.manual_seed(s)`` followed by constructing ``m`` would give.

    Raises:
        ConfigError: a module owns parameters or buffers of a type this function does not
            know how to initialise (rather than silently leaving them as they are).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | _ConvNd):
                _reset_weight_and_bias(module, generator)
            elif isinstance(module, _NormBase):
                module.reset_running_stats()
                _reset_affine(module)
            elif isinstance(module, nn.GroupNorm | nn.LayerNorm):
                _reset_affine(module)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, generator=generator)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].fill_(0)
            elif any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(recurse=False)
            ):
                raise ConfigError(
                    f"reset_parameters does not know how to initialise "
                    f"{type(module).__name__}; it handles Linear, Conv, the norm layers "
                    f"and Embedding: build a model's weights from those, and make its "
                    f"constants in forward() (models are built on the meta device and then "
                    f"initialised by it)"
                )
