"""Unsupervised losses: reconstruction, non-negativity, Cauchy sparsity, spatial TV."""

from ._losses import DeconvLoss, LossWeights, total_variation

__all__ = ["DeconvLoss", "LossWeights", "total_variation"]
