"""Unsupervised losses: reconstruction, non-negativity, Cauchy sparsity, spatial TV."""

from ._losses import TV_WEIGHT, DeconvLoss, LossWeights, total_variation

__all__ = ["TV_WEIGHT", "DeconvLoss", "LossWeights", "total_variation"]
