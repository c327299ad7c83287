"""Matching distances between real and synthetic statistics. Pure functions of tensors."""

from __future__ import annotations

from torch import Tensor


def mean_embedding_loss(real_feat: Tensor, syn_feat: Tensor) -> Tensor:
    """Distribution Matching's loss from per-class features.

    Args:
        real_feat: (K, n_real, D) real embeddings (no grad needed).
        syn_feat: (K, ipc, D) synthetic embeddings.
    Returns:
        scalar: sum over the K classes of the squared distance between the class means.
    """
    return ((real_feat.mean(1) - syn_feat.mean(1)) ** 2).sum()
