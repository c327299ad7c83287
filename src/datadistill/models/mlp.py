"""The DC code's MLP: flatten -> 128 -> ReLU -> 128 -> ReLU -> K."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._validate import check_int


class MLP(ImageClassifier):
    """MLP: two hidden layers of ``width`` units with ReLU.

    Shapes: (B, C, H, W) -> flatten (B, C*H*W) -> ``embed`` (B, width) -> ``forward`` (B, K).
    """

    def __init__(
        self,
        *,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 128,
    ) -> None:
        super().__init__(
            channels=channels, num_classes=num_classes, image_size=image_size, owner="mlp"
        )
        self.width = check_int(width, "width", "mlp")
        h, w = self.image_size
        self.fc_1 = nn.Linear(self.channels * h * w, width)
        self.fc_2 = nn.Linear(width, width)
        self.feature_dim = width
        self.classifier = nn.Linear(width, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, width)."""
        return F.relu(self.fc_2(F.relu(self.fc_1(x.flatten(1)))))


MODELS.register("mlp", family="mlp")(MLP)
