"""LeNet-5 as in the DC code: two 5x5 conv / ReLU / max-pool stages, then 120 -> 84 -> K."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._layers import HW, can_halve, conv_out, mnist_padding


def _plan(hw: HW, paddings: tuple[int, int]) -> tuple[list[bool], HW] | None:
    """Which of the two pools are kept and the final map size, or None if a conv empties it."""
    pools = []
    for i, padding in enumerate(paddings):
        hw = conv_out(hw, 5, 1, padding)
        if min(hw) < 1:
            return None
        keep = can_halve(hw, more_follow=i == 0)
        pools.append(keep)
        if keep:
            hw = (hw[0] // 2, hw[1] // 2)
    return pools, hw


class LeNet(ImageClassifier):
    """LeNet: conv5(6) -> ReLU -> maxpool -> conv5(16) -> ReLU -> maxpool -> fc 120 -> fc 84.

    Padding is the reference's: 2 in the first conv for 1-channel 28 px digits (28 -> 28 ->
    14 -> 10 -> 5), 0 otherwise (32 px -> 5x5). When that arithmetic would leave no pixel
    (images under ~16 px, e.g. the 8x8 digits) both convs use "same" padding 2 instead.

    Shapes: (B, C, H, W) -> ``embed`` (B, 84) -> ``forward`` (B, K).
    """

    def __init__(
        self, *, channels: int, num_classes: int, image_size: int | tuple[int, int]
    ) -> None:
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner="lenet"
        )
        first = 2 if mnist_padding(self.channels, self.image_size) else 0
        paddings = (first, 0)
        plan = _plan(self.image_size, paddings)
        if plan is None:
            paddings = (2, 2)
            plan = _plan(self.image_size, paddings)
            assert plan is not None
        pools, hw = plan
        layers: list[nn.Module] = []
        in_channels = self.channels
        for out_channels, padding, pool in zip((6, 16), paddings, pools, strict=True):
            layers += [nn.Conv2d(in_channels, out_channels, 5, padding=padding), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.fc_1 = nn.Linear(16 * hw[0] * hw[1], 120)
        self.fc_2 = nn.Linear(120, 84)
        self.feature_dim = 84
        self.classifier = nn.Linear(84, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 84)."""
        out = self.features(x).flatten(1)
        return F.relu(self.fc_2(F.relu(self.fc_1(out))))


MODELS.register("lenet", family="lenet")(LeNet)
