"""ConvNet, the default network of dataset distillation (DC, DSA, DM, MTT, ...).

``depth`` blocks of [conv 3x3 (``width`` channels, padding 1) -> norm -> activation ->
2x2 pooling], then flatten -> ``nn.Linear``. ``features`` is one flat ``nn.Sequential``
laid out like the reference code (conv, norm, act, pool, conv, ...).

Faithfulness notes:

* 1-channel 28x28 inputs (MNIST, Fashion-MNIST) get padding 3 in the first convolution,
  as in the reference: 28 -> 32 -> 16 -> 8 -> 4, so depth 3 / width 128 gives
  D = 128 * 4 * 4 = 2048 features. Other inputs use padding 1 (3-channel 28 px:
  28 -> 14 -> 7 -> 3).
* ``instancenorm`` is ``GroupNorm(width, width)`` and ``layernorm`` is
  ``LayerNorm([width, H, W])``, both affine, as in the reference.
* Small images: the default depth drops blocks until the last one normalises a map of at
  least 4x4 (8x8 digits: depth 2; see ``default_depth``), and a pooling step is skipped
  when it would leave a map smaller than 2x2 that a later block still processes, or no
  pixel at all (see ``can_halve``); neither happens at the depths and sizes the papers
  use (3 for <= 32 px, 4 for 64 px, 5 for 128 px).
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._layers import (
    ACTIVATIONS,
    NORMS,
    POOLINGS,
    can_halve,
    check_norm,
    conv_out,
    make_act,
    make_norm,
    make_pool,
    mnist_padding,
)
from datadistill.models._validate import check_choice, check_int

MIN_NORM_SIDE = 4  # smallest side of the map the last block normalises, by default depth


def default_depth(image_size: tuple[int, int], pooled: bool = True) -> int:
    """The depth the papers use: 3 up to 32 px, 4 for 64 px, 5 for 128 px (one per doubling).

    With pooling, the depth is capped so that the last block still normalises a map of at
    least 4x4 (``MIN_NORM_SIDE``): 8 px -> 2 blocks, 4 px and below -> 1. Below that the
    network degenerates: an instance norm over a 2x2 map divides by the spread of four
    values, and on scikit-learn's 8x8 digits a depth-3 ConvNet made gradient matching (DC at
    the paper's pixel lr) wreck the set it started from, where depth 2 distils well. The
    cap never fires at the sizes the papers use (their last blocks see 7x7 or 8x8 maps).
    """
    h, w = image_size
    depth = 3
    while max(h, w) > 4 * 2**depth:
        depth += 1
    if pooled:
        while depth > 1 and min(h, w) // 2 ** (depth - 1) < MIN_NORM_SIDE:
            depth -= 1
    return depth


class ConvNet(ImageClassifier):
    """The field's ConvNet: ``depth`` blocks of conv3x3 (``width`` channels) -> norm ->
    activation -> 2x2 pooling, then one linear classifier (depth by image size by default).

    Args:
        channels: input channels C.
        num_classes: number of classes K.
        image_size: input size, an int or (H, W).
        width: channels of every convolution.
        depth: number of conv blocks; ``None`` picks :func:`default_depth`.
        norm: ``instancenorm`` | ``batchnorm`` | ``layernorm`` | ``none``.
        pooling: ``avgpool`` | ``maxpool`` | ``none``.
        act: ``relu`` | ``sigmoid`` | ``leakyrelu``.

    Shapes: (B, C, H, W) -> ``embed`` (B, D) -> ``forward`` (B, K), with
    D = width * H' * W' (H', W' the final map size).
    """

    def __init__(
        self,
        *,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
        pooling: str = "avgpool",
        act: str = "relu",
    ) -> None:
        owner = "convnet"
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner=owner
        )
        width = check_int(width, "width", owner)
        norm = check_norm(norm, owner, NORMS)
        pooling = check_choice(pooling, POOLINGS, "pooling", owner)
        act = check_choice(act, ACTIVATIONS, "act", owner)
        if depth is None:
            depth = default_depth(self.image_size, pooled=pooling != "none")
        depth = check_int(depth, "depth", owner)
        self.width, self.depth, self.norm, self.pooling, self.act = (
            width,
            depth,
            norm,
            pooling,
            act,
        )

        layers: list[nn.Module] = []
        hw = self.image_size
        in_channels = self.channels
        for d in range(depth):
            padding = 3 if d == 0 and mnist_padding(self.channels, self.image_size) else 1
            layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=padding))
            hw = conv_out(hw, 3, 1, padding)
            norm_layer = make_norm(norm, width, hw)
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(make_act(act))
            if pooling != "none" and can_halve(hw, more_follow=d < depth - 1):
                layers.append(make_pool(pooling))
                hw = (hw[0] // 2, hw[1] // 2)
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, hw[0], hw[1])  # (C', H', W') before flattening
        self.feature_dim = width * hw[0] * hw[1]
        self.classifier = nn.Linear(self.feature_dim, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, width * H' * W')."""
        out: Tensor = self.features(x)
        return out.flatten(1)


MODELS.register("convnet", family="convnet")(ConvNet)

_VARIANTS: dict[str, dict[str, Any]] = {
    "convnetd3": {"depth": 3},
    "convnetd4": {"depth": 4},
    "convnetd5": {"depth": 5},
    "convnet_bn": {"norm": "batchnorm"},
    "convnet_ln": {"norm": "layernorm"},
    "convnet_nn": {"norm": "none"},
    "convnet_mp": {"pooling": "maxpool"},
    "convnetw32": {"width": 32},
    "convnetw64": {"width": 64},
}
for _name, _fixed in _VARIANTS.items():
    MODELS.register(_name, family="convnet", base="convnet", fixed=_fixed)(
        functools.partial(ConvNet, **_fixed)
    )
