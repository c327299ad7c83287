"""Coreset baselines: pick real images instead of synthesising them.

``random`` draws uniformly per class; ``herding`` greedily keeps the running mean of the
chosen features close to the class mean (Welling 2009, as used by iCaRL and the DC
paper); ``kcenter`` greedily adds the point farthest from the chosen set (Sener &
Savarese 2018). Herding and k-center work in the embedding of a briefly trained ConvNet.

With a multi-formation ``factor`` above 1 each baseline picks ``ipc * factor**2`` real
images per class and stores them, downsampled, as the tiles of ``ipc`` images per class
(:class:`~datadistill.synthetic.MultiFormationSet`): the baseline a multi-formation
distilled set is compared with at the same storage.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from datadistill.data import RealData
from datadistill.methods.base import HParams, Method, positive, register_method, registered_model
from datadistill.methods.common import check_ipc
from datadistill.methods.features import all_class_features
from datadistill.synthetic import MultiFormationSet, PixelSet


def herding(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows of ``features`` (n, D) chosen by herding, in selection order.

    At step t, choose the unchosen row whose addition brings the mean of the chosen rows
    closest to the mean of all rows.
    """
    mu = features.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        candidate_means = (running.unsqueeze(0) + features) / t  # (n, D)
        dist = (candidate_means - mu).pow(2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += features[i]
    return torch.tensor(chosen, dtype=torch.long)


def kcenter(features: Tensor, k: int, first: int) -> Tensor:
    """Greedy k-center: start at ``first``, then repeatedly add the farthest row."""
    chosen = [first]
    min_dist = (features - features[first]).pow(2).sum(1)
    # a chosen row is out of the running even where unchosen rows tie with it at distance 0
    # (duplicate images), so the coreset always holds k distinct rows
    min_dist[first] = -float("inf")
    for _ in range(k - 1):
        i = int(min_dist.argmax())
        chosen.append(i)
        min_dist = torch.minimum(min_dist, (features - features[i]).pow(2).sum(1))
        min_dist[i] = -float("inf")
    return torch.tensor(chosen, dtype=torch.long)


@dataclasses.dataclass(frozen=True)
class RandomParams(HParams):
    factor: int = 1  # multi-formation: ipc * factor**2 real images per class, stored as
    # the factor x factor tiles of ipc images (1: ipc plain images)

    display_name: ClassVar[str] = "random"

    def validate(self) -> None:
        positive(self.owner, "factor", self.factor, int)


@dataclasses.dataclass(frozen=True)
class FeatureCoresetParams(HParams):
    arch: str = "convnet"  # feature network
    width: int = 128  # feature network width (ConvNets, MLP: see takes_width)
    train_steps: int = 300  # SGD steps (batch 256) of the feature network on real data
    factor: int = 1  # multi-formation, as for random

    display_name: ClassVar[str] = "coreset"  # each method's own below

    def validate(self) -> None:
        positive(self.owner, "factor", self.factor, int)
        positive(self.owner, "width", self.width, int)
        registered_model(self, self.owner)
        positive(self.owner, "train_steps", self.train_steps, int)


@dataclasses.dataclass(frozen=True)
class HerdingParams(FeatureCoresetParams):
    display_name: ClassVar[str] = "herding"


@dataclasses.dataclass(frozen=True)
class KCenterParams(FeatureCoresetParams):
    display_name: ClassVar[str] = "kcenter"


class _Coreset(Method):
    needs_steps = False
    default_iterations = 0

    def select(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> Tensor:
        """Global training indices ``(K, ipc)`` of the chosen images (``setup`` passes
        ``ipc * factor**2`` for a multi-formation set)."""
        raise NotImplementedError

    def setup(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> None:
        factor: int = self.hparams.factor  # type: ignore[attr-defined]
        check_ipc(real, ipc, factor)
        picks = ipc * factor**2
        self.indices = self.select(real, picks, generator, device)  # (K, ipc * factor**2)
        images = real.train_x[self.indices.flatten().to(real.train_x.device)].cpu()
        k = real.info.num_classes
        if factor == 1:
            self.synset = PixelSet(images, k).to(device)
        else:
            grouped = images.view(k, picks, *images.shape[1:])
            self.synset = MultiFormationSet.from_real(grouped, factor).to(device)


@register_method("random")
class RandomCoreset(_Coreset):
    """Random real images per class (the baseline every method must beat)."""

    hparams_class = RandomParams

    def select(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> Tensor:
        rows = []
        for idx in real.class_indices("train"):
            perm = torch.randperm(idx.numel(), generator=generator)[:ipc]
            rows.append(idx.cpu()[perm])
        return torch.stack(rows)


class _FeatureCoreset(_Coreset):
    hparams_class = FeatureCoresetParams

    def pick(self, features: Tensor, ipc: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def select(
        self, real: RealData, ipc: int, generator: torch.Generator, device: torch.device
    ) -> Tensor:
        hp: FeatureCoresetParams = self.hparams  # type: ignore[assignment]
        per_class = all_class_features(real, hp.arch, hp.width, hp.train_steps, generator, device)
        rows = []
        for feats, idx in per_class:
            rows.append(idx.cpu()[self.pick(feats.float(), ipc, generator).cpu()])
        return torch.stack(rows)


@register_method("herding")
class HerdingCoreset(_FeatureCoreset):
    """Herding: real images whose feature mean tracks the class mean (DC paper baseline)."""

    hparams_class = HerdingParams

    def pick(self, features: Tensor, ipc: int, generator: torch.Generator) -> Tensor:
        return herding(features, ipc)


@register_method("kcenter")
class KCenterCoreset(_FeatureCoreset):
    """Greedy k-center in feature space, started at a random image (DC paper baseline)."""

    hparams_class = KCenterParams

    def pick(self, features: Tensor, ipc: int, generator: torch.Generator) -> Tensor:
        first = int(torch.randint(features.shape[0], (1,), generator=generator))
        return kcenter(features, ipc, first)
