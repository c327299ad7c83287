"""Matching distances between real and synthetic statistics. Pure functions of tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
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


MMD_BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # each twice the one before (see _kernel_sum)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(K, n, m) squared Euclidean distances between the rows of (K, n, D) and (K, m, D)."""
    d = (a * a).sum(-1, keepdim=True) - 2 * a @ b.transpose(1, 2) + (b * b).sum(-1)[:, None]
    return d.clamp_min(0)


def mmd_loss(real_feat: Tensor, syn_feat: Tensor) -> Tensor:
    """Squared maximum mean discrepancy per class with Gaussian kernels (the objective of
    M3D, Zhang et al. 2024; the kernel widths here are ours).

    Matching the whole distribution of a class's embeddings, not only its mean, asks the
    synthetic images to spread over the real ones. The kernels ``exp(-||x - y||^2 / (s *
    b))`` take the scales ``s`` of :data:`MMD_BANDWIDTH_SCALES` around ``b``, the (lower)
    median squared distance between a class's real embeddings (no gradient through it; with
    one real embedding, from it to the synthetic ones; if a class's real embeddings all
    coincide, ``b`` is tiny and the synthetic ones get no gradient). Each class's MMD^2 is
    multiplied by its ``b``, so that the loss scales with the embeddings as
    :func:`mean_embedding_loss` does (twice the embeddings, four times the loss) and DM's
    learning rates carry over.

    Args:
        real_feat: (K, n_real, D) real embeddings (no grad needed).
        syn_feat: (K, n_syn, D) synthetic embeddings.
    Returns:
        scalar: the sum over the K classes of ``b`` times the biased MMD^2 estimate,
        summed over the kernels.
    """
    # float32 at least: in bf16 / fp16 the expanded squared distances lose close pairs to
    # cancellation (and |a|^2 overflows fp16 for embeddings of a thousand dimensions)
    dtype = torch.promote_types(syn_feat.dtype, torch.float32)
    real_feat, syn_feat = real_feat.to(dtype), syn_feat.to(dtype)
    rs = _squared_distances(real_feat, syn_feat)  # (K, n, m)
    with torch.no_grad():
        rr = _squared_distances(real_feat, real_feat)  # (K, n, n)
        n = rr.shape[1]
        if n > 1:  # the off-diagonal entries
            pool = rr.flatten(1)[:, 1:].view(-1, n - 1, n + 1)[:, :, :-1].flatten(1)
        else:  # one real image per class: its distances to the synthetic ones
            pool = rs.flatten(1)
        band = pool.median(1).values.clamp_min(1e-12)  # (K,)
    ss = _squared_distances(syn_feat, syn_feat)
    per_class = _kernel_sum(rr, band).mean((1, 2)) - 2 * _kernel_sum(rs, band).mean((1, 2))
    return (band * (per_class + _kernel_sum(ss, band).mean((1, 2)))).sum()


def _kernel_sum(d: Tensor, band: Tensor) -> Tensor:
    """The sum over :data:`MMD_BANDWIDTH_SCALES` of ``exp(-d / (s * band))`` for (K, n, m)
    squared distances: one ``exp`` at the widest scale, each narrower (half as wide) its
    square."""
    e = torch.exp(-d / (MMD_BANDWIDTH_SCALES[-1] * band)[:, None, None])
    total = e
    for _ in MMD_BANDWIDTH_SCALES[:-1]:
        e = e * e
        total = total + e
    return total


# DM's ``distance`` choices: the loss of (K, n_real, D) and (K, n_syn, D) embeddings
EMBEDDING_DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mean": mean_embedding_loss,
    "mmd": mmd_loss,
}


GRADIENT_DISTANCES = ("ours", "mse", "cos", "l1")


def l1_matches(param: Tensor) -> bool:
    """Whether ``distance="l1"`` matches the gradient of ``param`` (its shape without the
    leading match dimension): a convolution kernel, ``(out, in, *kernel)``."""
    return param.dim() >= 3


def gradient_distance(
    real_grads: Sequence[Tensor], syn_grads: Sequence[Tensor], metric: str = "ours"
) -> Tensor:
    """Gradient matching's distance (DC, Zhao et al. 2021), summed over a leading batch dim.

    Each list holds one tensor per parameter of the network, with a leading dimension of
    independent matches (the classes): ``(K, *param.shape)``. The result is the sum over
    the K matches of

    - ``"ours"`` (the paper's): per layer and per output channel, ``1 - cos`` between the
      real and the synthetic gradient, where a channel's gradient is the flattened slice
      ``grad[o]`` of a weight with 2 or more dimensions; one-dimensional parameters
      (biases, normalisation scales) are ignored, as in the paper;
    - ``"mse"``: the squared Euclidean distance between all gradients concatenated;
    - ``"cos"``: ``1 - cos`` between all gradients concatenated;
    - ``"l1"`` (IDC's, Kim et al. 2022): the summed absolute difference over the
      convolution kernels only (parameters of 3 or more dimensions); biases, normalisation
      parameters and linear layers are not matched, as in IDC's default. A network without
      convolutions has nothing to match under it (the distance is then 0).
    """
    if len(real_grads) != len(syn_grads):
        raise ValueError(f"{len(real_grads)} real but {len(syn_grads)} synthetic gradients")
    if metric == "ours":
        total = syn_grads[0].new_zeros(())
        for gr, gs in zip(real_grads, syn_grads, strict=True):
            if gr.dim() <= 2:  # (K,) or (K, n): biases and norm parameters are not matched
                continue
            gr = gr.flatten(2)  # (K, out, rest)
            gs = gs.flatten(2)
            dot = (gr * gs).sum(-1)
            norms = gr.norm(dim=-1) * gs.norm(dim=-1)
            total = total + (1 - dot / (norms + 1e-6)).sum()
        return total
    if metric == "l1":
        total = syn_grads[0].new_zeros(())
        for gr, gs in zip(real_grads, syn_grads, strict=True):
            if l1_matches(gr[0]):
                total = total + (gs - gr).abs().sum()
        return total
    gr = torch.cat([g.flatten(1) for g in real_grads], dim=1)  # (K, P)
    gs = torch.cat([g.flatten(1) for g in syn_grads], dim=1)
    if metric == "mse":
        return ((gs - gr) ** 2).sum()
    if metric == "cos":
        dot = (gr * gs).sum(-1)
        return (1 - dot / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)).sum()
    raise ValueError(
        f"unknown gradient distance {metric!r}; valid: {', '.join(GRADIENT_DISTANCES)}"
    )
