"""Pure maths shared by methods: matching distances (and, later, kernels and unrolls)."""

from datadistill.functional.distances import mean_embedding_loss

__all__ = ["mean_embedding_loss"]
