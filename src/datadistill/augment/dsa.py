"""Differentiable Siamese augmentation (DSA, Zhao & Bilen, ICML 2021).

Sample parameters once per class (group), then apply the SAME parameters to that class's
real batch and synthetic batch, so that matching compares like with like, and gradients
flow through the augmentation into the synthetic images::

    dsa = DSA(DSAConfig().without_flip())
    params = dsa.sample(num_classes, generator, device)
    real_aug = dsa(real, params)  # (K, n_real, C, H, W)
    syn_aug = dsa(syn, params)    # (K, ipc, C, H, W)

When training evaluation networks, every image gets its own parameters and the batch one
family, as the reference's ``DiffAugment`` in single mode: ``dsa.augment(x, generator)``
for x (B, C, H, W).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from datadistill.augment.config import DSAConfig
from datadistill.augment.ops import AUGMENTATIONS
from datadistill.augment.params import DSAParams
from datadistill.errors import ConfigError, check


class DSA:
    """Samples :class:`DSAParams` and applies them to batches of images.

    All randomness comes from the ``torch.Generator`` passed to :meth:`sample`, drawn on the
    CPU and then moved to ``device``, so a seed gives the same augmentation on any device.
    """

    def __init__(self, config: DSAConfig = DSAConfig()) -> None:
        if not isinstance(config, DSAConfig):
            raise ConfigError(f"DSA expects a DSAConfig; got {type(config).__name__}.")
        self.config = config
        self.families = config.families

    def __repr__(self) -> str:
        return f"DSA({self.config!r})"

    def sample(
        self, groups: int, generator: torch.Generator, device: torch.device | str | None = None
    ) -> DSAParams:
        """Draw parameters for ``groups`` groups from ``generator`` (a CPU generator).

        Every family's values are drawn, in a fixed order, whatever the strategy; in
        ``"single"`` mode the family index per group is drawn last.
        """
        check(
            isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1,
            f"The 'groups' parameter of DSA.sample must be an int >= 1; got {groups!r}.",
        )
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ConfigError(
                f"The 'generator' parameter of DSA.sample must be a CPU torch.Generator; "
                f"got {generator!r}."
            )
        cfg = self.config
        # (G, 11), float32 like the reference; drawn on the CPU generator and copied once,
        # so that the parameters below are built where they are used (on CUDA, every
        # separate host-to-device copy would wait for the queued work)
        u = torch.rand(groups, 11, generator=generator).to(device)
        low = 1.0 / cfg.scale
        choice = None
        if cfg.mode == "single" and self.families:
            choice = torch.randint(len(self.families), (groups,), generator=generator)
        params = DSAParams(
            families=self.families,
            choice=choice,
            brightness=(u[:, 0] - 0.5) * cfg.brightness,
            saturation=u[:, 1] * cfg.saturation,
            contrast=u[:, 2] + cfg.contrast,
            crop=u[:, 3:5],
            crop_ratio=cfg.crop,
            cutout=u[:, 5:7],
            cutout_ratio=cfg.cutout,
            flip=u[:, 7] < cfg.flip,
            scale=u[:, 8:10] * (cfg.scale - low) + low,
            rotate=(u[:, 10] - 0.5) * (2 * cfg.rotate * math.pi / 180),
        )
        return params

    def __call__(self, x: Tensor, params: DSAParams) -> Tensor:
        """Augment ``x`` with ``params``.

        Args:
            x: (G, N, C, H, W), every image of group g gets group g's parameters (use the
                same ``params`` for a real and a synthetic batch; N may differ), or
                (G, C, H, W), one parameter set per image.
            params: from :meth:`sample` with ``groups == G``.

        Returns:
            a tensor of x's shape, differentiable with respect to x.
        """
        check(
            x.dim() in (4, 5),
            f"DSA expects images of shape (G, N, C, H, W) or (G, C, H, W); got {tuple(x.shape)}.",
        )
        check(
            x.shape[0] == params.groups,
            f"DSA got {params.groups} parameter groups for a batch of {x.shape[0]} groups.",
        )
        x5 = x.unsqueeze(1) if x.dim() == 4 else x
        out = self._apply(x5, params)
        return out.squeeze(1) if x.dim() == 4 else out

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augment every image of x (B, C, H, W) with its own freshly sampled parameters;
        in single mode the whole batch takes one family (see :func:`one_family_per_batch`)."""
        return self(x, one_family_per_batch(self.sample(x.shape[0], generator, x.device)))

    @staticmethod
    def _apply(x: Tensor, params: DSAParams) -> Tensor:
        if params.choice is None:  # "multiple": every family, in order
            for name in params.families:
                x = AUGMENTATIONS.get(name)(x, params)
            return x
        choice = params.choice.cpu()
        if bool((choice == choice[0]).all()):  # one family for all groups
            return AUGMENTATIONS.get(params.families[int(choice[0])])(x, params)
        # Sort the groups by family, run each family once on its contiguous slice, unsort.
        order = torch.argsort(choice, stable=True)
        counts = torch.bincount(choice, minlength=len(params.families)).tolist()
        # (the families are applied slice by slice below: the groups' choice is not needed
        # there, and taking it, on the CPU, with a device index would wait for the device)
        order = order.to(x.device)
        xs, ps = x[order], dataclasses.replace(params, choice=None).take(order)
        pieces, start = [], 0
        for family, count in zip(params.families, counts, strict=True):
            if count:
                index = torch.arange(start, start + count, device=x.device)
                pieces.append(AUGMENTATIONS.get(family)(xs[start : start + count], ps.take(index)))
                start += count
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat(pieces)[inverse]


def one_family_per_batch(params: DSAParams) -> DSAParams:
    """As the reference's single mode on a training batch: one augmentation family for the
    whole batch (the first image's draw), with per-image parameters."""
    if params.choice is None:
        return params
    return dataclasses.replace(params, choice=params.choice[:1].expand_as(params.choice).clone())
