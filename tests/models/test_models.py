"""Every registered model: shapes, gradients, sizes, errors, torch.func / channels_last."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datadistill.errors import ConfigError, UnknownNameError
from datadistill.models import (
    MODELS,
    ConvNet,
    ImageClassifier,
    create_model,
    default_depth,
    list_models,
)

# Small widths where a model allows it, to keep the sweep fast.
SMALL: dict[str, dict[str, int]] = {
    name: {"width": 16}
    for name, meta in ((n, MODELS.meta(n)) for n in list_models())
    if meta["family"] == "convnet" and "width" not in meta.get("fixed", {})
}


def build(name: str, channels: int, size: int, seed: int = 0, **kw: object) -> nn.Module:
    kwargs = {**SMALL.get(name, {}), **kw}
    g = torch.Generator().manual_seed(seed)
    return create_model(
        name, channels=channels, num_classes=7, image_size=size, generator=g, **kwargs
    )


def test_registry_lists_the_promised_models() -> None:
    expected = {
        "convnet",
        "convnetd3",
        "convnetd4",
        "convnetd5",
        "convnet_bn",
        "convnet_ln",
        "convnet_nn",
        "convnet_mp",
        "convnetw32",
        "convnetw64",
        "lenet",
        "alexnet",
        "vgg11",
        "vgg11_bn",
        "resnet18",
        "resnet18_bn",
        "mlp",
    }
    assert expected <= set(list_models())
    assert list_models("convnetd*") == ["convnetd3", "convnetd4", "convnetd5"]


@pytest.mark.parametrize("size", [8, 28, 32, 64])  # digits, MNIST, CIFAR, Tiny ImageNet
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_forward_backward_embed(name: str, channels: int, size: int) -> None:
    model = build(name, channels, size)
    assert isinstance(model, ImageClassifier)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))
    features = model.embed(x)
    assert features.shape == (2, model.feature_dim)
    logits = model(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model.classifier(model.embed(x)))
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname  # every layer sees the input


def test_non_square_images() -> None:
    for name in ("convnet", "lenet", "resnet18_bn", "mlp"):
        model = create_model(
            name, channels=3, num_classes=4, image_size=(16, 32), **SMALL.get(name, {})
        )
        assert model(torch.randn(2, 3, 16, 32)).shape == (2, 4)


def test_convnet_reference_shapes() -> None:
    """The ConvNet-3 / width-128 feature sizes of the reference code."""

    def dim(channels: int, size: int, **kw: object) -> int:
        return ConvNet(channels=channels, num_classes=10, image_size=size, **kw).feature_dim

    assert dim(1, 28) == 128 * 4 * 4  # MNIST: padding 3, 28 -> 32 -> 16 -> 8 -> 4
    assert dim(3, 32) == 128 * 4 * 4  # CIFAR
    assert dim(3, 28) == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3 without the MNIST padding
    assert dim(3, 64) == 128 * 4 * 4  # depth 4 by default (Tiny ImageNet)
    assert dim(1, 8) == 128 * 2 * 2  # digits: depth 2, 8 -> 4 -> 2 (last norm over 4x4)
    assert dim(1, 8, depth=3) == 128  # 8 -> 4 -> 2 -> 1 when asked for
    assert dim(3, 32, depth=4) == 128 * 2 * 2
    assert dim(3, 32, pooling="none", depth=1, width=8) == 8 * 32 * 32
    mnist = ConvNet(channels=1, num_classes=10, image_size=28)
    first = mnist.features[0]
    assert isinstance(first, nn.Conv2d) and first.padding == (3, 3)
    assert isinstance(mnist.features[1], nn.GroupNorm) and mnist.features[1].num_groups == 128
    assert len(mnist.features) == 12  # [conv, norm, act, pool] x 3


def test_default_depth() -> None:
    sizes = (4, 8, 12, 16, 28, 32, 64, 128, 256)
    assert [default_depth((s, s)) for s in sizes] == [1, 2, 2, 3, 3, 3, 4, 5, 6]
    assert default_depth((8, 32)) == 2  # the smaller side decides the cap
    assert default_depth((2, 2), pooled=False) == 3


@pytest.mark.parametrize(
    ("kw", "layer"),
    [
        ({"norm": "batchnorm"}, nn.BatchNorm2d),
        ({"norm": "layernorm"}, nn.LayerNorm),
        ({"pooling": "maxpool"}, nn.MaxPool2d),
        ({"act": "sigmoid"}, nn.Sigmoid),
        ({"act": "leakyrelu"}, nn.LeakyReLU),
    ],
)
def test_convnet_options(kw: dict[str, str], layer: type[nn.Module]) -> None:
    model = ConvNet(channels=3, num_classes=10, image_size=32, width=8, **kw)
    assert any(isinstance(m, layer) for m in model.modules())
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_convnet_layernorm_is_over_chw() -> None:
    model = ConvNet(channels=3, num_classes=10, image_size=32, width=8, norm="layernorm")
    shapes = [m.normalized_shape for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert shapes == [(8, 32, 32), (8, 16, 16), (8, 8, 8)]


def test_variants_pin_their_option() -> None:
    assert build("convnetd4", 3, 32).depth == 4
    assert build("convnet_nn", 3, 32).norm == "none"
    assert build("convnetw32", 3, 32).width == 32
    assert build("ConvNet_BN", 3, 32).norm == "batchnorm"  # case-insensitive
    assert build("convnet_bn", 3, 32, norm="batchnorm").norm == "batchnorm"  # same value: ok
    with pytest.raises(ConfigError, match="fixes norm='batchnorm'"):
        build("convnet_bn", 3, 32, norm="instancenorm")
    assert any(isinstance(m, nn.BatchNorm2d) for m in build("resnet18_bn", 3, 8).modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build("vgg11", 3, 8).modules())


def test_invalid_options_raise_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        create_model("convnet", channels=3, num_classes=10, image_size=32, norm="foo")
    assert str(info.value) == (
        "The 'norm' parameter of convnet must be one of 'instancenorm', 'batchnorm', "
        "'layernorm', 'none'; got 'foo'."
    )
    with pytest.raises(ConfigError, match="'pooling' parameter of convnet"):
        create_model("convnet", channels=3, num_classes=10, image_size=32, pooling="sum")
    with pytest.raises(ConfigError, match="'width' parameter of convnet must be an int >= 1"):
        create_model("convnet", channels=3, num_classes=10, image_size=32, width=0)
    with pytest.raises(ConfigError, match="unknown option.*'depht'.*width, depth"):
        create_model("convnet", channels=3, num_classes=10, image_size=32, depht=3)
    with pytest.raises(ConfigError, match="its options are: none"):
        create_model("lenet", channels=3, num_classes=10, image_size=32, width=3)
    with pytest.raises(ConfigError, match="'channels' parameter"):
        create_model("mlp", channels=0, num_classes=10, image_size=32)
    with pytest.raises(ConfigError, match="'image_size' parameter"):
        create_model("mlp", channels=1, num_classes=10, image_size=(8, 8, 8))
    with pytest.raises(ConfigError, match="'generator' parameter"):
        create_model("mlp", channels=1, num_classes=10, image_size=8, generator=0)  # type: ignore[arg-type]


def test_unknown_model_names_the_closest_match() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        create_model("resnet17", channels=3, num_classes=10, image_size=32)
    with pytest.raises(UnknownNameError, match="Valid models: alexnet, convnet"):
        create_model("nope", channels=3, num_classes=10, image_size=32)


def test_functional_call_and_grad_match_module() -> None:
    model = build("convnet", 1, 28)
    x = torch.randn(4, 1, 28, 28)
    params = {k: v.detach() for k, v in model.named_parameters()}
    out = torch.func.functional_call(model, params, (x,))
    torch.testing.assert_close(out, model(x))
    grads = torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params)
    model(x).sum().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad)


@pytest.mark.parametrize("name", ["convnet", "convnet_ln", "resnet18", "vgg11_bn"])
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = build(name, 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_inference_mode_and_eval() -> None:
    model = build("convnet_bn", 1, 28).eval()
    with torch.inference_mode():
        assert model.embed(torch.randn(3, 1, 28, 28)).shape == (3, model.feature_dim)


def test_vmap_over_stacked_models() -> None:
    """Ensembles: one functional_call vmapped over a stack of parameter sets."""
    models = [build("convnet", 1, 28, seed=s, width=8) for s in range(3)]
    params, buffers = torch.func.stack_module_state(models)  # type: ignore[arg-type]
    x = torch.randn(4, 1, 28, 28)

    def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(models[0], (p, b), (x,))

    out = torch.func.vmap(call)(params, buffers)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]))
