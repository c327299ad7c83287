"""ResNet-18 for small images as in the DC code: a 3x3 stem (no max-pool), four stages of
two basic blocks, global average pooling, linear; instance norm (``resnet18``) or batch
norm (``resnet18_bn``)."""

from __future__ import annotations

import functools

import torch.nn.functional as F
from torch import Tensor, nn

from datadistill.models._base import ImageClassifier
from datadistill.models._factory import MODELS
from datadistill.models._layers import HW, check_norm, conv_out, make_norm


def _norm(kind: str, channels: int, hw: HW) -> nn.Module:
    layer = make_norm(kind, channels, hw)
    assert layer is not None
    return layer


class BasicBlock(nn.Module):
    """conv3x3(stride) -> norm -> ReLU -> conv3x3 -> norm, plus a (1x1 conv -> norm) shortcut
    when the shape changes, then ReLU. (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: str, hw_out: HW
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_channels, hw_out)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_channels, hw_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _norm(norm, out_channels, hw_out),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(ImageClassifier):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2], widths 64-128-256-512).

    The reference ends with ``avg_pool2d(out, 4)``, which is global pooling at 28 / 32 px
    (4x4 maps); we use global average pooling so D = 512 at every size. A stage keeps
    stride 1 instead of 2 when striding would leave a map smaller than 2x2 (8 px inputs:
    8 -> 8 -> 4 -> 2 -> 2), where instance norm would see single pixels.

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
            channels=channels, num_classes=num_classes, image_size=image_size, owner="resnet18"
        )
        self.norm = check_norm(norm, "resnet18", ("instancenorm", "batchnorm"))
        hw = self.image_size
        self.conv1 = nn.Conv2d(self.channels, 64, 3, padding=1, bias=False)
        self.norm1 = _norm(self.norm, 64, hw)
        stages: list[nn.Module] = []
        in_channels = 64
        for out_channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            if stride == 2 and min(conv_out(hw, 3, 2, 1)) < 2:
                stride = 1
            hw = conv_out(hw, 3, stride, 1)
            stages.append(
                nn.Sequential(
                    BasicBlock(in_channels, out_channels, stride, self.norm, hw),
                    BasicBlock(out_channels, out_channels, 1, self.norm, hw),
                )
            )
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = in_channels
        self.classifier = nn.Linear(in_channels, self.num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 512)."""
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


MODELS.register("resnet18", family="resnet")(ResNet18)
MODELS.register("resnet18_bn", family="resnet", base="resnet18", fixed={"norm": "batchnorm"})(
    functools.partial(ResNet18, norm="batchnorm")
)
