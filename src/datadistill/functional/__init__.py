"""Pure maths shared by methods: matching distances (and, later, kernels and unrolls)."""

from datadistill.functional.distances import (
    GRADIENT_DISTANCES,
    gradient_distance,
    mean_embedding_loss,
)

__all__ = ["GRADIENT_DISTANCES", "gradient_distance", "mean_embedding_loss"]
