"""VGG-11 for small images as in the DC code, with instance norm (``vgg11``) or batch norm
(``vgg11_bn``)."""

from __future__ import annotations

import functools

from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._layers import can_halve, check_norm, conv_out, make_norm, mnist_padding

_VGG11: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(ImageClassifier):
    """VGG-11: eight conv3x3 -> norm -> ReLU layers and five 2x2 max-pools, then global
    average pooling -> linear(512 -> K).

    As in the DC code: ``instancenorm`` is ``GroupNorm(C, C)``; 1-channel 28 px digits get
    padding 3 in the first conv (28 -> 32). At 32 px the last map is 1x1 and the global
    average pool is the identity (the reference's ``AvgPool2d(1)``); it keeps D = 512 at
    other sizes (64 px, 3-channel 28 px, 8 px), where pools that would leave a map below 2x2
    before more convs are skipped (:func:`can_halve`).

    Shapes: (B, C, H, W) -> ``embed`` (B, 512) -> ``forward`` (B, K).
    """

    def __init__(
        self,
        *,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        norm: str = "instancenorm",
    ) -> None:
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner="vgg11"
        )
        self.norm = check_norm(norm, "vgg11", ("instancenorm", "batchnorm"))
        layers: list[nn.Module] = []
        hw = self.image_size
        in_channels = self.channels
        last_pool = max(i for i, v in enumerate(_VGG11) if v == "M")
        for i, v in enumerate(_VGG11):
            if v == "M":
                if can_halve(hw, more_follow=i < last_pool):
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    hw = (hw[0] // 2, hw[1] // 2)
                continue
            assert isinstance(v, int)
            padding = 3 if i == 0 and mnist_padding(self.channels, self.image_size) else 1
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=padding))
            hw = conv_out(hw, 3, 1, padding)
            norm_layer = make_norm(self.norm, v, hw)
            assert norm_layer is not None
            layers += [norm_layer, nn.ReLU()]
            in_channels = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_channels
        self.classifier = nn.Linear(in_channels, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 512)."""
        out: Tensor = self.pool(self.features(x))
        return out.flatten(1)


MODELS.register("vgg11", family="vgg")(VGG11)
MODELS.register("vgg11_bn", family="vgg", base="vgg11", fixed={"norm": "batchnorm"})(
    functools.partial(VGG11, norm="batchnorm")
)
