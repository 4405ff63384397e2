r"""Unsupervised deconvolution losses, as published for SHD (no ground truth needed).

With predicted WM SH :math:`c` (up to the output's ``lmax``), isotropic fractions :math:`\phi`,
the measured normalised signal :math:`s` and the fODF on a dense grid :math:`f = B_{dense} c`
(the nside-16 hemisphere, 1536 points; the fODF is antipodally symmetric, so a mean over it is
the full sphere's mean over 3072 points), every term is a plain mean over its elements:

* reconstruction: :math:`\mathrm{mean}_{x \in M, g} (\hat s_{xg} - s_{xg})^2` on every volume
  (b=0 included); the forward model sees only the orders its response has.
* non-negativity: :math:`\mathrm{mean}_{x \in M, v} \min(f_{xv}, 0)^2`.
* sparsity (Cauchy): :math:`\mathrm{mean}_{x \in M, v}\ 2 \log(1 + f_{xv}^2 / (2\sigma))`,
  which bends at :math:`f \approx \sqrt{2\sigma}`.
* spatial total variation on the fODF's shape: with :math:`\bar f_x = f_x / \lVert f_x \rVert`
  (L2 norm over the full dense sphere), :math:`\mathrm{mean}_{(x, x'), v} (\bar f_{xv} -
  \bar f_{x'v})^2` over face-neighbour pairs with both voxels in the mask (the mean over the
  6 neighbours of every voxel: each pair is seen from both of its voxels). It equals
  :math:`(1 - \cos_{xx'}) / V` per pair, with the cosine taken in the dense grid's Gram metric
  on the SH coefficients, which is how it is computed.
* supervised (only with a ground-truth fODF :math:`t`, e.g. phantoms in training):
  :math:`\sum_{x \in M} \lVert c_x - t_x \rVert^2 / \sum_{x \in M} \lVert t_x \rVert^2` over
  the orders both have.

Tensors: ``wm_sh`` ``[B, S, X, Y, Z]``, ``iso`` ``[B, T, X, Y, Z]``, ``signal``
``[B, G, X, Y, Z]``, ``mask`` ``[B, X, Y, Z]`` (bool or 0/1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .._options import OptionError
from ..signal._forward import ForwardModel
from ..sphere import hemisphere_directions, lmax_from_ncoeffs, sh_matrix

__all__ = ["TV_WEIGHT", "DeconvLoss", "LossWeights", "supervised_sh_loss", "total_variation"]


#: The published spatial TV weight (the ``shd-tv`` variant and ``direct``).
TV_WEIGHT = 0.5


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. Defaults: the published SHD configuration without TV."""

    reconstruction: float = 1.0
    nonnegativity: float = 0.1
    sparsity: float = 5e-5
    sparsity_sigma: float = 1e-5
    tv: float = 0.0
    supervised: float = 0.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (v >= 0):
                raise OptionError(f"loss weight {k} must be non-negative, got {v}")
        if self.sparsity_sigma <= 0:
            raise OptionError(f"sparsity_sigma must be positive, got {self.sparsity_sigma}")


def dense_grid_matrix(lmax: int, nside: int = 16) -> torch.Tensor:
    """SH matrix ``(V, S)`` of the dense grid: the upper hemisphere of HEALPix ``nside``."""
    return torch.as_tensor(sh_matrix(hemisphere_directions(nside), lmax), dtype=torch.float32)


def _tv_sums(c: torch.Tensor, gram: torch.Tensor, n_points: int, mask: torch.Tensor, first: torch.Tensor):
    r"""Sum over face-neighbour pairs of :math:`\mathrm{mean}_v (\bar f_{av} - \bar f_{bv})^2`, and the count.

    With :math:`\bar f = f / \lVert f \rVert` (full-sphere norm, ``sqrt(2)`` times the half
    grid's) the half grid's sum of squares of :math:`\bar f` is 1/2, so a pair's mean over the
    ``V`` points is :math:`(1 - \cos_{ab}) / V`, :math:`\cos_{ab} = c_a^T G c_b /
    \sqrt{c_a^T G c_a\, c_b^T G c_b}` with ``G = B^T B`` the dense grid's Gram matrix: the same
    number as on the grid, computed on the ``S`` coefficients instead of the ``V`` points
    (:class:`_ShapeTV`).
    ``c`` ``[B, X, Y, Z, S]``; ``mask`` and ``first`` ``[B, X, Y, Z]`` (float); a pair counts
    when both voxels are in ``mask`` and its lower voxel in ``first``.
    """
    den = c.new_zeros(())
    for axis in (1, 2, 3):
        n = c.shape[axis]
        if n > 1:
            den = den + _pairs(mask, first, axis).sum()
    return _ShapeTV.apply(c, gram, mask, first) / n_points, den


def _pairs(mask: torch.Tensor, first: torch.Tensor, axis: int) -> torch.Tensor:
    """Weight of each face-neighbour pair along ``axis`` (its lower voxel's index): 1 when both
    voxels are in ``mask`` and the lower one in ``first``."""
    n = mask.shape[axis]
    return mask.narrow(axis, 0, n - 1) * mask.narrow(axis, 1, n - 1) * first.narrow(axis, 0, n - 1)


class _ShapeTV(torch.autograd.Function):
    r""":math:`\sum_{(a, b)} w_{ab} (1 - \cos_{ab})` over face-neighbour pairs (see :func:`_tv_sums`).

    The gradient is written out, :math:`\partial \cos_{ab} / \partial c_a = q_b / (n_a n_b) -
    \cos_{ab}\, q_a / n_a^2` with :math:`q = c G` and :math:`n = \sqrt{c^T q}` (and the same with
    ``a`` and ``b`` swapped), accumulated into one array: autograd's version of the shifted
    products allocated a zero-filled copy of the volume for every slice it differentiated.
    Norms below 1e-10 are clamped there, with no gradient through them (as a clamp has).
    ``c`` ``[B, X, Y, Z, S]``, ``gram`` ``(S, S)``, ``mask`` and ``first`` ``[B, X, Y, Z]``.
    """

    @staticmethod
    def forward(ctx, c, gram, mask, first):
        q = c @ gram
        sq = (c * q).sum(-1)
        norm = sq.clamp_min(1e-20).sqrt_()
        total = c.new_zeros(())
        for axis in (1, 2, 3):
            n = c.shape[axis]
            if n < 2:
                continue
            cos = (c.narrow(axis, 0, n - 1) * q.narrow(axis, 1, n - 1)).sum(-1).div_(
                norm.narrow(axis, 0, n - 1) * norm.narrow(axis, 1, n - 1))
            total += ((1.0 - cos) * _pairs(mask, first, axis)).sum()
        ctx.save_for_backward(c, q, norm, sq > 1e-20, mask, first)
        return total

    @staticmethod
    def backward(ctx, g):
        c, q, norm, free, mask, first = ctx.saved_tensors
        acc = torch.zeros_like(c)
        for axis in (1, 2, 3):
            n = c.shape[axis]
            if n < 2:
                continue
            lo, hi = (lambda t: t.narrow(axis, 0, n - 1)), (lambda t: t.narrow(axis, 1, n - 1))
            alpha = _pairs(mask, first, axis) / (lo(norm) * hi(norm))  # w / (n_a n_b)
            wcos = (lo(c) * hi(q)).sum(-1).mul_(alpha)  # w cos
            beta_a = (wcos / lo(norm).square()).mul_(lo(free))  # w cos / n_a^2
            beta_b = (wcos / hi(norm).square()).mul_(hi(free))  # w cos / n_b^2
            lo(acc).addcmul_(alpha[..., None], hi(q)).addcmul_(beta_a[..., None], lo(q), value=-1.0)
            hi(acc).addcmul_(alpha[..., None], lo(q)).addcmul_(beta_b[..., None], hi(q), value=-1.0)
        return acc.mul_(-g), None, None, None


def total_variation(wm_sh: torch.Tensor, mask: torch.Tensor, nside_dense: int = 16) -> torch.Tensor:
    """The TV term alone: ``wm_sh`` ``[B, S, X, Y, Z]``, ``mask`` ``[B, X, Y, Z]``; the mean over
    the dense grid's points and the face-neighbour pairs inside ``mask`` (see :class:`DeconvLoss`)."""
    b = dense_grid_matrix(lmax_from_ncoeffs(wm_sh.shape[1]), nside_dense).to(wm_sh)
    m = mask.to(wm_sh.dtype)
    num, den = _tv_sums(wm_sh.movedim(1, -1), b.T @ b, b.shape[0], m, torch.ones_like(m))
    return num / den.clamp_min(1.0)


#: Rows (voxels) of ``f = c B^T`` that :class:`_GridPenalties` holds at once: 4096 x 1536 float32
#: points are 24 MiB (a whole-volume ``direct`` step over 10^5 voxels otherwise allocates
#: several GiB-sized temporaries).
GRID_BLOCK_ROWS = 4096


class _GridPenalties(torch.autograd.Function):
    r"""Sums over voxels of :math:`\mathrm{mean}_v \min(f_v, 0)^2` and of
    :math:`\mathrm{mean}_v 2 \log(1 + f_v^2 / (2\sigma))` with ``f = c B^T``, in one pass.

    The gradient is written out (:math:`2 \min(f, 0)` and :math:`4 f / (2\sigma + f^2)`) and
    ``f`` is recomputed in ``backward`` rather than kept: a few passes over the ``N x V`` values
    instead of autograd's dozen, and no ``N x V`` tensor held between the passes. Both passes
    run over blocks of :data:`GRID_BLOCK_ROWS` voxels.
    ``c`` ``[N, S]``, ``b`` ``[V, S]``.
    """

    @staticmethod
    def forward(ctx, c, b, sigma: float):
        nonneg, sparsity = c.new_zeros(()), c.new_zeros(())
        f_buf, h_buf = _block_buffers(c, b.shape[0])
        for rows in c.split(GRID_BLOCK_ROWS):
            f, h = f_buf[:len(rows)], h_buf[:len(rows)]
            torch.matmul(rows, b.T, out=f)
            nonneg += torch.clamp(f, max=0.0, out=h).pow_(2).mean(-1).sum()
            sparsity += 2.0 * f.pow_(2).div_(2.0 * sigma).log1p_().mean(-1).sum()
        ctx.save_for_backward(c, b)
        ctx.sigma = sigma
        return nonneg, sparsity

    @staticmethod
    def backward(ctx, g_nonneg, g_sparsity):
        c, b = ctx.saved_tensors
        v = b.shape[0]
        out = torch.empty_like(c)
        f_buf, grad_buf = _block_buffers(c, v)
        for rows, grad_rows in zip(c.split(GRID_BLOCK_ROWS), out.split(GRID_BLOCK_ROWS)):
            f, grad = f_buf[:len(rows)], grad_buf[:len(rows)]
            torch.matmul(rows, b.T, out=f)
            torch.mul(f, f, out=grad).add_(2.0 * ctx.sigma)
            torch.div(f, grad, out=grad).mul_(4.0 * g_sparsity / v)
            grad += f.clamp_(max=0.0).mul_(2.0 * g_nonneg / v)
            torch.matmul(grad, b, out=grad_rows)
        return out, None, None


def _block_buffers(c: torch.Tensor, v: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two ``[min(N, GRID_BLOCK_ROWS), V]`` work arrays for :class:`_GridPenalties`, allocated once
    per pass and reused by every block instead of fresh temporaries per block."""
    rows = min(len(c), GRID_BLOCK_ROWS)
    return c.new_empty((rows, v)), c.new_empty((rows, v))


def supervised_sh_loss(wm_sh: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative squared SH error inside ``mask`` over the coefficients both tensors have."""
    num, den = _supervised_sums(wm_sh, target, mask.to(wm_sh.dtype))
    return num / den.clamp_min(1e-12)


def _supervised_sums(wm_sh, target, m):
    s = min(wm_sh.shape[1], target.shape[1])
    m = m.unsqueeze(1)
    return (((wm_sh[:, :s] - target[:, :s]) ** 2) * m).sum(), ((target[:, :s] ** 2) * m).sum()


class DeconvLoss(nn.Module):
    """Weighted sum of the losses; ``forward`` returns ``(total, parts)``.

    Parameters
    ----------
    forward_model : ForwardModel
        The acquisition's forward model (its response's ``lmax`` may be below ``lmax``).
    weights : LossWeights
    lmax : int, optional
        Order of the fODF SH the loss is given (default: the forward model's).
    nside_dense : int
        HEALPix resolution of the dense grid (its upper hemisphere).
    """

    def __init__(self, forward_model: ForwardModel, weights: LossWeights = LossWeights(), lmax: int | None = None,
                 nside_dense: int = 16):
        super().__init__()
        self.forward_model = forward_model
        self.weights = weights
        self.lmax = int(lmax if lmax is not None else forward_model.lmax)
        b = dense_grid_matrix(self.lmax, nside_dense)
        self.register_buffer("b_dense", b, persistent=False)
        self.register_buffer("gram", b.T @ b, persistent=False)

    def sums(self, wm_sh, iso, signal, mask, target=None, core=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each active term as ``(sum, count)``: the loss of a volume cut into chunks is exact
        when every chunk gives its own ``core`` ``[B, X, Y, Z]`` (its voxels, not its halo) and
        the sums and counts of all chunks are added before dividing.
        """
        w = self.weights
        if wm_sh.shape[1] != self.b_dense.shape[1]:
            raise ValueError(f"the loss was built for lmax {self.lmax} ({self.b_dense.shape[1]} coefficients), "
                             f"got {wm_sh.shape[1]}")
        m = mask.to(wm_sh.dtype)
        first = torch.ones_like(m) if core is None else core.to(wm_sh.dtype)
        mc = m * first
        nvox = mc.sum()
        c = wm_sh.movedim(1, -1)  # [B, X, Y, Z, S]
        phi = iso.movedim(1, -1) if iso is not None else None
        counted = mc > 0
        inside = c[counted]  # [N, S]: the per-voxel terms only where they count
        pred = self.forward_model(inside, phi[counted] if phi is not None else None)
        out = {"reconstruction": (((pred - signal.movedim(1, -1)[counted]) ** 2).mean(-1).sum(), nvox)}
        if w.nonnegativity > 0 or w.sparsity > 0:
            nonneg, sparsity = _GridPenalties.apply(inside, self.b_dense, w.sparsity_sigma)
            if w.nonnegativity > 0:
                out["nonnegativity"] = (nonneg, nvox)
            if w.sparsity > 0:
                out["sparsity"] = (sparsity, nvox)
        if w.tv > 0:
            out["tv"] = _tv_sums(c, self.gram, self.b_dense.shape[0], m, first)
        if w.supervised > 0 and target is not None:
            out["supervised"] = _supervised_sums(wm_sh, target, mc)
        return out

    def combine(self, sums: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        """``(total, parts)`` from (possibly accumulated) :meth:`sums`."""
        parts = {k: s / torch.as_tensor(n).clamp_min(1e-12 if k == "supervised" else 1.0) for k, (s, n) in sums.items()}
        total = sum(getattr(self.weights, k) * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def forward(self, wm_sh, iso, signal, mask, target=None):
        """``target`` ``[B, S', X, Y, Z]``: ground-truth SH for the supervised term (optional)."""
        return self.combine(self.sums(wm_sh, iso, signal, mask, target))
