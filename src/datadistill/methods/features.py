"""Feature space for coreset selection: a network trained briefly on the training split.

As in the DC paper's herding and k-center baselines, selection happens in the embedding
(the layer before the classifier) of a ConvNet trained for a short while on real data.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from datadistill.data import RealData
from datadistill.evaluation.train import train_network
from datadistill.methods.common import require_embed
from datadistill.models import create_model_for


def train_feature_network(
    real: RealData,
    arch: str,
    width: int,
    steps: int,
    generator: torch.Generator,
    device: torch.device,
) -> nn.Module:
    """A network trained for ``steps`` SGD steps (batch 256, lr 0.01) on the training split."""
    net = create_model_for(arch, real.info, width, generator).to(device)
    require_embed(net, arch, "Selecting in feature space")
    n = real.train_x.shape[0]
    epochs = max(1, -(-steps * 256 // n))  # enough epochs to reach `steps`
    train_network(
        net,
        real.train_x.to(device),
        real.train_y.to(device),
        epochs=epochs,
        lr=0.01,
        generator=generator,
        decay_at=1.0,
        max_steps=steps,
    )
    net.eval()
    return net


@torch.no_grad()
def class_features(
    net: nn.Module, real: RealData, c: int, device: torch.device, batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """Embeddings ``(n_c, D)`` of class ``c``'s training images and their indices ``(n_c,)``."""
    idx = real.class_indices("train")[c]
    feats = [
        net.embed(real.train_x[idx[i : i + batch_size]].to(device))  # type: ignore[operator]
        for i in range(0, idx.numel(), batch_size)
    ]
    return torch.cat(feats), idx


# The last feature space computed, keyed by everything it depends on: herding and k-center
# with the same seed and settings (e.g. a benchmark over several IPCs) train it once. The
# features wait in host memory (a GPU's memory, and the peak a later run measures, stay
# free of them) and are forgotten when their data are freed.
_LAST: dict[str, Any] = {}


def _forget(ref: weakref.ref[Tensor]) -> None:
    if _LAST.get("data") is ref:
        _LAST.clear()


def all_class_features(
    real: RealData,
    arch: str,
    width: int,
    steps: int,
    generator: torch.Generator,
    device: torch.device,
) -> list[tuple[Tensor, Tensor]]:
    """Per class, the embeddings and indices of its training images in the feature space
    of a freshly trained network; ``generator`` advances as if the network were trained."""
    # The data are identified by the tensor object itself (a weak reference, so a freed
    # tensor whose address is reused can never match); a device copy made by
    # ``RealData.to`` counts as the data it was copied from.
    key = (
        arch,
        width,
        steps,
        str(device),
        hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest(),
    )
    ref = _LAST.get("data")
    source = real.source_train_x
    if ref is not None and ref() is source and _LAST.get("key") == key:
        generator.set_state(_LAST["state"])
        return [(f.to(where), idx) for f, idx, where in _LAST["features"]]
    net = train_feature_network(real, arch, width, steps, generator, device)
    features = [class_features(net, real, c, device) for c in range(real.info.num_classes)]
    _LAST.clear()
    _LAST.update(
        data=weakref.ref(source, _forget),
        key=key,
        state=generator.get_state(),
        features=[(f.cpu(), idx, f.device) for f, idx in features],
    )
    return features
