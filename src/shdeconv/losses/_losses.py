r"""Unsupervised deconvolution losses (DESIGN.md section 5). No ground truth needed.

With predicted WM SH :math:`c`, isotropic fractions :math:`\phi`, measured normalised
signal :math:`s` and the fODF sampled on a dense hemisphere :math:`f = B_{dense} c`:

* reconstruction: :math:`\mathrm{mean}_{x \in M, g} (\hat s_{xg} - s_{xg})^2`
* non-negativity: :math:`\mathrm{mean}_{x \in M, v}\ \mathrm{relu}(-f_{xv})^2`
* sparsity (Cauchy): :math:`\mathrm{mean}_{x \in M, v} \log(1 + f_{xv}^2 / \sigma^2)`
* spatial total variation: :math:`\mathrm{mean}_{(x, x')} \lVert c_x - c_{x'} \rVert^2`
  over 6-neighbour pairs inside the mask; by orthonormality of the SH basis this is
  :math:`\int (f_x - f_{x'})^2`.
* supervised (only when a ground-truth fODF :math:`t` is given, e.g. phantoms in training):
  :math:`\sum_{x \in M} \lVert c_x - t_x \rVert^2 / \sum_{x \in M} \lVert t_x \rVert^2`.

Tensors: ``wm_sh`` ``[B, S, X, Y, Z]``, ``iso`` ``[B, T, X, Y, Z]``, ``signal``
``[B, G, X, Y, Z]``, ``mask`` ``[B, X, Y, Z]`` (bool or 0/1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..signal._forward import ForwardModel
from ..sphere import hemisphere_directions, sh_matrix

__all__ = ["DeconvLoss", "LossWeights", "supervised_sh_loss", "total_variation"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Defaults: the published SHD configuration."""

    reconstruction: float = 1.0
    nonnegativity: float = 0.1
    sparsity: float = 5e-5
    sparsity_sigma: float = 1e-5
    tv: float = 0.0
    supervised: float = 0.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (v >= 0):
                raise ValueError(f"loss weight {k} must be non-negative, got {v}")
        if self.sparsity_sigma <= 0:
            raise ValueError(f"sparsity_sigma must be positive, got {self.sparsity_sigma}")


def total_variation(wm_sh: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared SH difference over 6-neighbour voxel pairs both inside ``mask``."""
    m = mask.to(wm_sh.dtype)
    num = wm_sh.new_zeros(())
    den = wm_sh.new_zeros(())
    for axis in (2, 3, 4):
        n = wm_sh.shape[axis]
        a, b = wm_sh.narrow(axis, 0, n - 1), wm_sh.narrow(axis, 1, n - 1)
        pair = m.narrow(axis - 1, 0, n - 1) * m.narrow(axis - 1, 1, n - 1)
        num = num + (((a - b) ** 2).sum(1) * pair).sum()
        den = den + pair.sum()
    return num / den.clamp_min(1.0)


def supervised_sh_loss(wm_sh: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative squared SH error inside ``mask``; ``wm_sh``, ``target`` ``[B, S, X, Y, Z]``."""
    m = mask.to(wm_sh.dtype).unsqueeze(1)
    num = (((wm_sh - target) ** 2) * m).sum()
    return num / ((target ** 2) * m).sum().clamp_min(1e-12)


class DeconvLoss(nn.Module):
    """Weighted sum of the unsupervised losses; returns ``(total, parts)``."""

    def __init__(self, forward_model: ForwardModel, weights: LossWeights = LossWeights(), nside_dense: int = 16):
        super().__init__()
        self.forward_model = forward_model
        self.weights = weights
        b = sh_matrix(hemisphere_directions(nside_dense), forward_model.lmax)
        self.register_buffer("b_dense", torch.as_tensor(b, dtype=torch.float32), persistent=False)

    def forward(self, wm_sh, iso, signal, mask, target=None):
        """``target`` ``[B, S, X, Y, Z]``: ground-truth SH for the supervised term (optional)."""
        w = self.weights
        m = mask.to(wm_sh.dtype)
        nvox = m.sum().clamp_min(1.0)
        c = wm_sh.movedim(1, -1)  # [B, X, Y, Z, S]
        phi = iso.movedim(1, -1) if iso is not None else None
        pred = self.forward_model(c, phi)
        resid = ((pred - signal.movedim(1, -1)) ** 2).mean(-1)
        parts = {"reconstruction": (resid * m).sum() / nvox}
        if w.nonnegativity > 0 or w.sparsity > 0:
            f = c @ self.b_dense.T  # [B, X, Y, Z, V]
            if w.nonnegativity > 0:
                parts["nonnegativity"] = (torch.relu(-f).pow(2).mean(-1) * m).sum() / nvox
            if w.sparsity > 0:
                cauchy = torch.log1p((f / w.sparsity_sigma) ** 2).mean(-1)
                parts["sparsity"] = (cauchy * m).sum() / nvox
        if w.tv > 0:
            parts["tv"] = total_variation(wm_sh, mask)
        if w.supervised > 0 and target is not None:
            parts["supervised"] = supervised_sh_loss(wm_sh, target, mask)
        total = sum(getattr(w, k) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
