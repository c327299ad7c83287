"""AlexNet for small images, as in the DC code (five convs, three max-pools, one linear)."""

from __future__ import annotations

from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._layers import can_halve, conv_out, mnist_padding

# (out_channels, kernel, padding, pool after); the first padding is set per input.
_CONVS = (
    (128, 5, 2, True),
    (192, 5, 2, True),
    (256, 3, 1, False),
    (192, 3, 1, False),
    (192, 3, 1, True),
)


class AlexNet(ImageClassifier):
    """DC's AlexNet: conv5(128) / conv5(192) / conv3(256) / conv3(192) / conv3(192), ReLU,
    2x2 max-pools after the 1st, 2nd and 5th conv, flatten -> linear.

    1-channel 28 px digits get padding 4 in the first conv (28 -> 32, as the reference), so
    28 and 32 px inputs end at 4x4 (D = 192 * 16 = 3072). Other sizes keep the arithmetic
    (8 px -> 1x1, 64 px -> 8x8); a pool is skipped where :func:`can_halve` says so.

    Shapes: (B, C, H, W) -> ``embed`` (B, D) -> ``forward`` (B, K).
    """

    def __init__(
        self, *, channels: int, num_classes: int, image_size: int | tuple[int, int]
    ) -> None:
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner="alexnet"
        )
        layers: list[nn.Module] = []
        hw = self.image_size
        in_channels = self.channels
        last_pool = max(i for i, c in enumerate(_CONVS) if c[3])
        for i, (out_channels, kernel, padding, pool) in enumerate(_CONVS):
            if i == 0 and mnist_padding(self.channels, self.image_size):
                padding = 4
            layers += [nn.Conv2d(in_channels, out_channels, kernel, padding=padding), nn.ReLU()]
            hw = conv_out(hw, kernel, 1, padding)
            if pool and can_halve(hw, more_follow=i < last_pool):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                hw = (hw[0] // 2, hw[1] // 2)
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.feature_dim = in_channels * hw[0] * hw[1]
        self.classifier = nn.Linear(self.feature_dim, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 192 * H' * W')."""
        out: Tensor = self.features(x)
        return out.flatten(1)


MODELS.register("alexnet", family="alexnet")(AlexNet)
