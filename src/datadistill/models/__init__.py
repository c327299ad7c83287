"""Networks used to distil and to evaluate: the ConvNet family, LeNet, AlexNet, VGG-11,
ResNet-18 and an MLP, registered by name.

>>> model = create_model("convnet", channels=1, num_classes=10, image_size=28,
...                      generator=torch.Generator().manual_seed(0))
>>> model.embed(x).shape == (x.shape[0], model.feature_dim)

Every model is an :class:`ImageClassifier`: ``embed(x)`` gives the (B, D) features before
the final linear layer ``classifier`` and ``forward(x) = classifier(embed(x))``.
"""

from datadistill.models import alexnet, convnet, lenet, mlp, resnet, vgg  # noqa: F401  (register)
from datadistill.models._base import ImageClassifier
from datadistill.models._factory import (
    MODELS,
    check_model_options,
    check_width_applies,
    create_model,
    create_model_for,
    list_models,
    takes_width,
)
from datadistill.models.alexnet import AlexNet
from datadistill.models.convnet import ConvNet, default_depth
from datadistill.models.init import reset_parameters
from datadistill.models.lenet import LeNet
from datadistill.models.mlp import MLP
from datadistill.models.resnet import ResNet18
from datadistill.models.vgg import VGG11

__all__ = [
    "MODELS",
    "AlexNet",
    "ConvNet",
    "ImageClassifier",
    "LeNet",
    "MLP",
    "ResNet18",
    "VGG11",
    "create_model",
    "create_model_for",
    "check_model_options",
    "check_width_applies",
    "takes_width",
    "default_depth",
    "list_models",
    "reset_parameters",
]
