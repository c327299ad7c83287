"""Pure maths shared by methods: matching distances here; per-class gradients
(:mod:`.grads`, :mod:`.class_grads`) and unrolled SGD (:mod:`.unroll`) in their modules."""

from datadistill.functional.distances import (
    GRADIENT_DISTANCES,
    gradient_distance,
    l1_matches,
    mean_embedding_loss,
)

__all__ = ["GRADIENT_DISTANCES", "gradient_distance", "l1_matches", "mean_embedding_loss"]
