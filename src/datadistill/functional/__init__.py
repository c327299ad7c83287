"""Pure maths shared by methods: matching distances here; per-class gradients
(:mod:`.grads`, :mod:`.class_grads`) and unrolled SGD (:mod:`.unroll`) in their modules."""

from datadistill.functional.distances import (
    EMBEDDING_DISTANCES,
    GRADIENT_DISTANCES,
    gradient_distance,
    l1_matches,
    mean_embedding_loss,
    mmd_loss,
)

__all__ = [
    "EMBEDDING_DISTANCES",
    "GRADIENT_DISTANCES",
    "gradient_distance",
    "l1_matches",
    "mean_embedding_loss",
    "mmd_loss",
]
