"""The model registry, ``create_model`` and ``list_models`` (timm-style)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from datadistill.errors import ConfigError
from datadistill.models._validate import check_int, image_hw
from datadistill.models.init import reset_parameters
from datadistill.registry import Registry

if TYPE_CHECKING:
    from datadistill.data import DatasetInfo

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
"""Registered model factories, called as ``factory(channels=, num_classes=, image_size=, **kw)``.

Metadata: ``family`` (``convnet``, ``resnet``, ...); variants also carry ``base`` (the model
they specialise) and ``fixed`` (the keyword arguments they pin).
"""

_REQUIRED = ("channels", "num_classes", "image_size")


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell pattern (``"convnet*"``)."""
    return MODELS.names(pattern)


def _accepted_kwargs(factory: ModelFactory) -> list[str]:
    params = inspect.signature(factory).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _REQUIRED
    ]


def create_model(
    name: str,
    *,
    channels: int,
    num_classes: int,
    image_size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model for (B, ``channels``, H, W) inputs and ``num_classes`` logits.

    Args:
        name: a registered name (case-insensitive; see :func:`list_models`).
        channels: input channels C (1 or 3 for the builtin datasets).
        num_classes: number of logits K.
        image_size: H = W as an int, or (H, W).
        generator: CPU ``torch.Generator`` for the initial weights. When given, the model
            is built on the meta device and initialised by :func:`reset_parameters` from
            this generator only (PyTorch's default init distributions, and the global RNG
            is not touched), so equal seeds give equal models. When ``None``, PyTorch's
            default initialisation draws from the global RNG.
        **kwargs: architecture options (e.g. ``width``, ``depth``, ``norm`` for ConvNet).

    Returns:
        an :class:`~datadistill.models.ImageClassifier` on the CPU, in training mode, with
        ``embed(x) -> (B, feature_dim)`` and ``forward(x) -> (B, K)``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message names the closest match).
        ConfigError: an invalid or unknown option.
    """
    factory = MODELS.get(name)
    check_int(channels, "channels", "create_model")
    check_int(num_classes, "num_classes", "create_model")
    hw = image_hw(image_size)
    check_model_options(name, **kwargs)
    if generator is None:
        return factory(channels=channels, num_classes=num_classes, image_size=hw, **kwargs)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ConfigError(
            f"The 'generator' parameter of create_model must be a CPU torch.Generator or None; "
            f"got {generator!r}."
        )
    with torch.device("meta"):
        model = factory(channels=channels, num_classes=num_classes, image_size=hw, **kwargs)
    model = model.to_empty(device="cpu")
    _refuse_meta_attributes(model, MODELS.canonical(name))
    reset_parameters(model, generator)
    return model


def _refuse_meta_attributes(model: nn.Module, name: str) -> None:
    """A tensor a model's ``__init__`` keeps as a plain attribute (no parameter or buffer)
    was made on the meta device and holds no values: refuse it here, by name, rather than
    let the first forward pass fail on a device mismatch."""
    for path, module in model.named_modules():
        for attr, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_meta:
                if value.numel() == 0:  # an empty placeholder holds no values anyway
                    setattr(module, attr, torch.empty(value.shape, dtype=value.dtype))
                    continue
                where = f"{path}.{attr}" if path else attr
                raise ConfigError(
                    f"Model {name!r} keeps the tensor {where!r} made in __init__; models are "
                    "built on the meta device (then initialised from a generator), so it holds "
                    "no values: make it in forward() (e.g. torch.tensor(0.5, device=x.device))."
                )


def check_signature(name: str) -> None:
    """Raise :class:`ConfigError` when the registered model ``name`` does not take the
    keywords every model is built with (``channels``, ``num_classes``, ``image_size``)."""
    params = inspect.signature(MODELS.get(name)).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        lacks = [k for k in _REQUIRED if k not in {p.name for p in params}]
        if lacks:
            raise ConfigError(
                f"Model {MODELS.canonical(name)!r} must take the keywords channels, "
                f"num_classes and image_size (as every registered model does); it lacks "
                f"{', '.join(lacks)}."
            )


def check_model_options(name: str, **kwargs: Any) -> None:
    """Raise :class:`ConfigError` when the registered model ``name`` does not take the
    options ``kwargs`` (unknown ones, or ones a variant fixes to another value)."""
    check_signature(name)
    factory = MODELS.get(name)
    meta = MODELS.meta(name)
    canonical = str(meta["name"])
    fixed: dict[str, Any] = meta.get("fixed", {})
    for key, value in kwargs.items():
        if key in fixed and value != fixed[key]:
            raise ConfigError(
                f"Model {canonical!r} fixes {key}={fixed[key]!r}; use {meta['base']!r} with "
                f"{key}={value!r} instead."
            )
    accepted = _accepted_kwargs(factory)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        options = ", ".join(accepted) if accepted else "none"
        raise ConfigError(
            f"Model {canonical!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: {options}."
        )


def takes_width(name: str) -> bool:
    """Whether the registered model ``name`` takes a ``width`` option it does not fix: the
    ConvNet and its variants other than the fixed-width ``convnetw32`` / ``convnetw64``,
    and the MLP (its hidden width)."""
    meta = MODELS.meta(name)
    return "width" in _accepted_kwargs(MODELS.get(name)) and "width" not in meta.get("fixed", {})


def check_width_applies(name: str, width: object, default: object, owner: str) -> None:
    """``create_model_for`` gives ``width`` to the models that take one (:func:`takes_width`):
    any other value than the ``default`` beside another architecture would be recorded but
    not applied."""
    if not takes_width(name) and width != default:
        raise ConfigError(
            f"The width applies to the models that take one (convnet, convnet_bn, ..., mlp); "
            f"{name} has its own widths (the 'width' parameter of {owner}). Drop "
            f"width={width!r}, or use arch=convnet."
        )


def create_model_for(
    name: str, info: DatasetInfo, width: int | None = None, generator: torch.Generator | None = None
) -> nn.Module:
    """A registered model for ``info``'s images and classes; ``width`` applies to the
    models that take one (:func:`takes_width`; how methods and expert buffers build their
    networks), None keeps the architecture's default (what evaluation trains)."""
    kwargs = {"width": width} if width is not None and takes_width(name) else {}
    return create_model(
        name,
        channels=info.channels,
        num_classes=info.num_classes,
        image_size=info.image_size,
        generator=generator,
        **kwargs,
    )
