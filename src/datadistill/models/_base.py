"""The contract every registered model keeps: ``embed`` -> features, ``classifier`` -> logits."""

from __future__ import annotations

from torch import Tensor, nn

from datadistill.models._validate import check_int, image_hw


class ImageClassifier(nn.Module):
    """Base class of the registered architectures.

    Subclasses build ``self.classifier`` (the final ``nn.Linear``, ``feature_dim`` ->
    ``num_classes``), set ``self.feature_dim`` and implement :meth:`embed`.

    Attributes:
        channels: input channels C.
        num_classes: number of logits K.
        image_size: input (H, W) the network was built for.
        feature_dim: D, the width of :meth:`embed`'s output.
    """

    classifier: nn.Linear
    feature_dim: int

    def __init__(
        self,
        *,
        channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        owner: str | None = None,
    ) -> None:
        """``owner`` names the model in the messages that refuse a size (default: the
        class's name)."""
        super().__init__()
        owner = owner or type(self).__name__
        self.channels = check_int(channels, "channels", owner)
        self.num_classes = check_int(num_classes, "num_classes", owner)
        self.image_size = image_hw(image_size, owner)

    def embed(self, x: Tensor) -> Tensor:
        """Features before the final linear layer: (B, C, H, W) -> (B, D)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, C, H, W) -> (B, K)."""
        logits: Tensor = self.classifier(self.embed(x))
        return logits

    def extra_repr(self) -> str:
        h, w = self.image_size
        return f"channels={self.channels}, image_size=({h}, {w}), feature_dim={self.feature_dim}"
