"""Deterministic creation and reset_parameters."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datadistill.errors import ConfigError
from datadistill.models import create_model, list_models, reset_parameters


def make(name: str, seed: int | None, **kw: object) -> nn.Module:
    g = None if seed is None else torch.Generator().manual_seed(seed)
    width = {"width": 16} if name == "convnet" else {}
    return create_model(
        name, channels=3, num_classes=10, image_size=8, generator=g, **{**width, **kw}
    )


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_model_and_global_rng_untouched(name: str) -> None:
    state = torch.get_rng_state()
    a, b, c = make(name, 0), make(name, 0), make(name, 1)
    assert torch.equal(state, torch.get_rng_state())
    assert same(a, b)
    assert not same(a, c)
    assert all(p.device.type == "cpu" for p in a.parameters())


@pytest.mark.parametrize("name", ["convnet", "convnet_ln", "lenet", "resnet18_bn", "vgg11"])
def test_generator_init_equals_pytorch_default_init(name: str) -> None:
    """reset_parameters draws what PyTorch's own init draws from the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        default = make(name, None)
    assert same(default, make(name, 123))


def test_reset_parameters_distributions() -> None:
    model = nn.Sequential(
        nn.Conv2d(16, 64, 3),
        nn.BatchNorm2d(64),
        nn.GroupNorm(8, 64),
        nn.LayerNorm(5),
        nn.Linear(400, 300),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
        model[1].running_mean.fill_(3.0)  # type: ignore[union-attr]
        model[1].num_batches_tracked.fill_(9)  # type: ignore[union-attr]
    reset_parameters(model, torch.Generator().manual_seed(0))
    for layer, fan_in in ((model[0], 16 * 9), (model[4], 400)):
        bound = 1 / math.sqrt(fan_in)
        w, b = layer.weight, layer.bias
        assert w.abs().max() <= bound and b.abs().max() <= bound
        # U(-bound, bound) has std bound / sqrt(3)
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    for norm in (model[1], model[2], model[3]):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    bn = model[1]
    assert torch.equal(bn.running_mean, torch.zeros(64))
    assert torch.equal(bn.running_var, torch.ones(64))
    assert int(bn.num_batches_tracked) == 0


def test_reset_parameters_refuses_unknown_modules() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(1))

    with pytest.raises(ConfigError, match="does not know how to initialise Scale"):
        reset_parameters(nn.Sequential(nn.Linear(2, 2), Scale()), torch.Generator())


def test_generator_none_uses_global_rng() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(5)
        a = make("mlp", None)
        torch.manual_seed(5)
        b = make("mlp", None)
    assert same(a, b)
