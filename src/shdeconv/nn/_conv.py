r"""Spherical and spatio-spherical Chebyshev graph convolutions (docs/method.md, section 4).

Shape alphabet: ``B`` batch, ``C`` channels, ``V`` sphere pixels (full sphere
``12 nside^2`` or hemisphere ``6 nside^2``), ``X, Y, Z`` space, ``K`` Chebyshev terms,
``R`` spatial distance classes.

Two layers:

* :class:`SphericalChebConv` (ESD / DeepSphere): :math:`y_o = \sum_i \sum_k \theta_{oik}
  T_k(\tilde L) x_i`, any number of trailing spatial dims.
* :class:`SpatioSphericalConv` (RT-ESD, SHD on the hemisphere): the same spherical filter times
  an isotropic 3x3x3 spatial kernel with one weight per distance class, in product form
  :math:`w_{oir} \theta_{oik}`. ``impl="fast"`` mixes channels into the ``R`` classes with
  one matmul and applies the fixed 0/1 class stencils with six separable neighbour sums;
  ``impl="dense"`` builds the full ``(Cout, Cin K, 3, 3, 3)`` kernel and runs one Conv3d
  (the oracle and the published formulation). Both share the parameters.
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ..sphere import check_nside
from ._chebyshev import chebyshev_projector, n_pixels, sparse_rescaled_laplacian
from ._pool import upsample_nearest2

__all__ = ["SphericalChebConv", "SpatioSphericalConv", "separable_class_stencil"]

logger = logging.getLogger(__name__)

IMPLS = ("fast", "dense")
CHEBYSHEV_MODES = ("sparse", "dense")


# ----------------------------------------------------------------------------------------
# precompute helpers
# ----------------------------------------------------------------------------------------
def _projector_tensor(nside: int, K: int, hemisphere: bool) -> torch.Tensor:
    """Dense projector in torch's default dtype (build float64 modules under float64 default)."""
    return torch.tensor(chebyshev_projector(nside, K, hemisphere), dtype=torch.get_default_dtype())


def _sparse_laplacian_tensors(nside: int, hemisphere: bool, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Block-diagonal :math:`I_C \otimes \tilde L` and its transpose as CSR tensors.

    ``(C V, C V)`` in torch's default dtype: one sparse product applies :math:`\tilde L` to
    every channel of a ``[C, V, N]`` signal stored as ``(C V, N)``.
    """
    m = sp.kron(sp.identity(int(channels), format="csr"), sparse_rescaled_laplacian(nside, hemisphere))
    m = m.tocsr()
    out = []
    for a in (m.tocsr(), m.T.tocsr()):
        a.sort_indices()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            out.append(
                torch.sparse_csr_tensor(
                    torch.as_tensor(a.indptr, dtype=torch.int64),
                    torch.as_tensor(a.indices, dtype=torch.int64),
                    torch.as_tensor(a.data, dtype=torch.get_default_dtype()),
                    size=a.shape,
                    check_invariants=True,
                )
            )
    return out[0], out[1]


def _distance_classes(kernel_size: int) -> np.ndarray:
    """Distance class of every tap of a ``k^3`` window: number of non-zero offsets (0..3)."""
    if kernel_size == 1:
        return np.zeros((1, 1, 1), dtype=np.int64)
    d = np.abs(np.arange(3) - 1)
    return (d[:, None, None] != 0).astype(np.int64) + (d[None, :, None] != 0) + (d[None, None, :] != 0)


class _SparseMatmul(torch.autograd.Function):
    """``L @ x`` for a constant sparse ``L`` (``(V, V)``) and dense ``x`` (``(V, N)``)."""

    @staticmethod
    def forward(ctx, lap, lap_t, x):
        ctx.lap_t = lap_t
        return torch.sparse.mm(lap, x)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.lap_t, grad.contiguous())


def _cast_sparse(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if a.dtype == like.dtype and a.device == like.device:
        return a
    return a.to(device=like.device, dtype=like.dtype)


def _chebyshev_recursion(lap: torch.Tensor, lap_t: torch.Tensor, x: torch.Tensor, K: int) -> list[torch.Tensor]:
    r"""``[T_0 x, ..., T_{K-1} x]`` for ``x`` of shape ``(C V, N)`` by the three-term recursion.

    :math:`T_0 x = x,\; T_1 x = \tilde L x,\; T_k x = 2 \tilde L T_{k-1} x - T_{k-2} x`:
    ``K - 1`` sparse products with about 9 non-zeros a row.
    """
    if x.dtype == torch.bfloat16:  # sparse products have no bfloat16 kernels: float32 inside
        return [t.to(x.dtype) for t in _chebyshev_recursion(lap, lap_t, x.float(), K)]
    lap, lap_t = _cast_sparse(lap, x), _cast_sparse(lap_t, x)
    out = [x]
    if K > 1:
        out.append(_SparseMatmul.apply(lap, lap_t, x))
    for _ in range(2, K):
        out.append(2.0 * _SparseMatmul.apply(lap, lap_t, out[-1]) - out[-2])
    return out


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """``t`` with its last three (spatial) dims flattened into one, as a view; None when they
    are not laid out contiguously among themselves."""
    nx, ny, nz = t.shape[-3:]
    if (nx == 1 or t.stride(-3) == ny * nz) and (ny == 1 or t.stride(-2) == nz) and (nz == 1 or t.stride(-1) == 1):
        return t.flatten(-3)
    return None


@lru_cache(maxsize=64)
def _valid_neighbour(shape: tuple, dim: int, step: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(X Y Z,)`` 0/1 mask, 1 where a voxel has a neighbour at ``step`` (+-1) along spatial
    axis ``dim`` (0, 1, 2) of a volume of ``shape``."""
    coord = torch.arange(shape[dim], device=device).view([-1 if a == dim else 1 for a in range(3)])
    ok = (coord < shape[dim] - 1) if step > 0 else (coord > 0)
    return ok.expand(shape).reshape(-1).to(dtype)


def _neighbour_sum(a: torch.Tensor | None, b: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """``out = a + e(b)`` (``a`` None: ``out = e(b)``), ``e`` = sum of the two neighbours along
    ``dim`` (one of the last three) with zero padding; two passes over memory.

    Where the spatial dims are laid out contiguously, the shifts run over the flattened
    ``X Y Z`` axis as long contiguous runs, with the neighbours that the flattening wraps
    around an edge masked out: about 3x faster on a CPU than shifting short rows (``z`` is 8
    long on a tile). Otherwise the shifted views are strided.
    """
    n = b.shape[dim]
    if n == 1:
        return out.copy_(a) if a is not None else out.zero_()
    fa, fb, fo = (None if a is None else _flat(a)), _flat(b), _flat(out)
    if fb is not None and fo is not None and (a is None or fa is not None):
        axis = dim % b.dim() - (b.dim() - 3)
        plus, minus = (_valid_neighbour(tuple(b.shape[-3:]), axis, step, b.dtype, b.device) for step in (1, -1))
        d, s = b.stride(dim), fb.shape[-1]
        head, tail = fo.narrow(-1, 0, s - d), fo.narrow(-1, s - d, d)
        if fa is None:
            torch.mul(fb.narrow(-1, d, s - d), plus.narrow(0, 0, s - d), out=head)
            tail.zero_()
        else:
            torch.addcmul(fa.narrow(-1, 0, s - d), fb.narrow(-1, d, s - d), plus.narrow(0, 0, s - d), out=head)
            tail.copy_(fa.narrow(-1, s - d, d))
        fo.narrow(-1, d, s - d).addcmul_(fb.narrow(-1, 0, s - d), minus.narrow(0, d, s - d))
        return out
    if a is None:
        out.narrow(dim, 0, n - 1).copy_(b.narrow(dim, 1, n - 1))
        out.narrow(dim, n - 1, 1).zero_()
    else:
        torch.add(a.narrow(dim, 0, n - 1), b.narrow(dim, 1, n - 1), out=out.narrow(dim, 0, n - 1))
        out.narrow(dim, n - 1, 1).copy_(a.narrow(dim, n - 1, 1))
    out.narrow(dim, 1, n - 1).add_(b.narrow(dim, 0, n - 1))
    return out


def _axis_sum(a: torch.Tensor, b: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a + e(b)``, ``e`` = sum of the two neighbours along ``dim`` with zero padding.

    Writes into ``out`` when given. Not for autograd (see :class:`_ClassStencil`).
    """
    return _neighbour_sum(a, b, dim, torch.empty_like(a) if out is None else out)


def _edge(t: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``e(t)``: sum of the two neighbours along ``dim`` (zero padding)."""
    return _neighbour_sum(None, t, dim, torch.empty_like(t) if out is None else out)


def _stencil_forward(y: torch.Tensor, dim: int) -> torch.Tensor:
    w = _axis_sum(y.narrow(dim, 0, 3), y.narrow(dim, 1, 3), -1)
    v = _axis_sum(w.narrow(dim, 0, 2), w.narrow(dim, 1, 2), -2)
    return _axis_sum(v.narrow(dim, 0, 1), v.narrow(dim, 1, 1), -3).squeeze(dim)


def _stencil_adjoint(g: torch.Tensor, dim: int) -> torch.Tensor:
    r"""``[S_0 g, S_1 g, S_2 g, S_3 g]`` stacked along ``dim``: the adjoint (``S_r`` symmetric).

    :math:`S_r = [t^r] \prod_a (c + t e_a)`, expanded axis by axis: six neighbour sums,
    written straight into the stacked result.
    """
    shape = list(g.shape)
    shape.insert(dim, 4)
    res = torch.empty(shape, dtype=g.dtype, device=g.device)
    c = [res.select(dim, r) for r in range(4)]
    a1 = _edge(g, -1)                       # e_z g
    b1 = _axis_sum(a1, g, -2)               # e_z g + e_y g
    b2 = _edge(a1, -2)                      # e_y e_z g
    c[0].copy_(g)
    _axis_sum(b1, g, -3, out=c[1])
    _axis_sum(b2, b1, -3, out=c[2])
    _edge(b2, -3, out=c[3])
    return res


class _ClassStencil(torch.autograd.Function):
    """``sum_r S_r y_r`` with the adjoint as its backward (linear, constant coefficients)."""

    @staticmethod
    def forward(ctx, y, dim):
        ctx.dim = dim
        return _stencil_forward(y, dim)

    @staticmethod
    def backward(ctx, g):
        return _ClassStencilAdjoint.apply(g, ctx.dim), None


class _ClassStencilAdjoint(torch.autograd.Function):
    """``g -> [S_r g]_r``; its backward is the forward stencil (double backward works)."""

    @staticmethod
    def forward(ctx, g, dim):
        ctx.dim = dim
        return _stencil_adjoint(g.contiguous(), dim)

    @staticmethod
    def backward(ctx, gg):
        return _ClassStencil.apply(gg, ctx.dim), None


def separable_class_stencil(y: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Apply :math:`\sum_r S_r y_r` over the last three (spatial) dims, classes along ``dim``.

    ``S_r`` is the 0/1 stencil of the 3x3x3 taps with ``r`` non-zero offsets, zero padding.
    With :math:`c` the identity and :math:`e_a` the sum of the two neighbours along axis ``a``,
    :math:`\sum_r S_r y_r = \sum_r [t^r] \prod_a (c + t e_a)\, y_r`, evaluated Horner-like:

    .. math::

        w_j = y_j + e_z y_{j+1}\ (j=0..2),\quad v_j = w_j + e_y w_{j+1}\ (j=0,1),
        \quad \mathrm{out} = v_0 + e_x v_1,

    six neighbour sums. ``y`` has size 4 along ``dim`` (``dim`` not one of the last three);
    the result drops that dim. The backward pass is the adjoint
    :math:`g \mapsto [S_0 g, \dots, S_3 g]`, also six neighbour sums, without autograd's
    copies of in-place slices.
    """
    if y.shape[dim] != 4:
        raise ValueError(f"expected 4 distance classes along dim {dim}, got shape {tuple(y.shape)}")
    if dim < 0:
        dim += y.dim()
    return _ClassStencil.apply(y, dim)


# ----------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------
class SphericalChebConv(nn.Module):
    r"""Chebyshev graph convolution on the sphere or hemisphere (ESD / DeepSphere).

    .. math::

        y_o = \sum_i \sum_{k<K} \theta_{oik}\, T_k(\tilde L)\, x_i + b_o

    Equivariant to the grid symmetries of the sphere (any trailing dims are untouched).

    Parameters
    ----------
    in_channels, out_channels : int
    nside : int
        HEALPix resolution.
    K : int
        Chebyshev terms (filter degree ``K - 1``).
    hemisphere : bool
        Folded hemisphere graph (``V = 6 nside^2``) or full sphere (``V = 12 nside^2``).
    bias : bool

    Notes
    -----
    ``forward(x)``: ``x`` ``[B, Cin, V, *spatial]`` -> ``[B, Cout, V, *spatial]``. The
    projector :math:`P` (``(K V, V)``) is a non-persistent buffer; the spherical part is one
    matmul, the channel mixing another.
    """

    def __init__(self, in_channels: int, out_channels: int, nside: int, K: int = 5,
                 hemisphere: bool = True, bias: bool = True):
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, K=K)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.nside, self.K, self.hemisphere = check_nside(nside), int(K), bool(hemisphere)
        self.V = n_pixels(self.nside, self.hemisphere)
        self.register_buffer("projector", _projector_tensor(self.nside, self.K, self.hemisphere),
                             persistent=False)
        self.theta = nn.Parameter(torch.empty(self.out_channels, self.in_channels, self.K))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal ``theta`` with fan-in ``Cin K``; zero bias."""
        nn.init.normal_(self.theta, std=math.sqrt(2.0 / (self.in_channels * self.K)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Cin, V, *spatial]`` -> ``[B, Cout, V, *spatial]``."""
        _check_input(x, self.in_channels, self.V, min_dim=3, what=type(self).__name__)
        b, spatial = x.shape[0], x.shape[3:]
        s = math.prod(spatial)
        z = torch.matmul(self.projector, x.reshape(b, self.in_channels, self.V, s))  # [B, C, KV, S]
        y = torch.matmul(self.theta.reshape(self.out_channels, -1), z.reshape(b, -1, self.V * s))
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.reshape(b, self.out_channels, self.V, *spatial)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, nside={self.nside}, K={self.K}, "
                f"hemisphere={self.hemisphere}, V={self.V}, bias={self.bias is not None}")


class SpatioSphericalConv(nn.Module):
    r"""E(3) x SO(3) spatio-spherical convolution with an isotropic spatial kernel.

    .. math::

        y_o(x, v) = \sum_i \sum_{k<K} \sum_{x'} w_{oi}(|x - x'|)\, \theta_{oik}\,
        [T_k(\tilde L)\, x_i](x', v) + b_o,
        \qquad w_{oi}(|d|) = \mathrm{radial}_{o,i,r(d)}

    with ``r(d)`` the number of non-zero offsets of tap ``d`` in the 3x3x3 window
    (distances 0, 1, sqrt2, sqrt3: ``R = 4``), zero 'same' padding. ``kernel_size=1`` gives
    the voxel-wise spherical layer (``R = 1``). Equivariant to translations and to the 48
    signed axis permutations of space, and to the sphere's grid symmetries (16 for HEALPix),
    separately and jointly; on the hemisphere it equals the full-sphere layer on antipodally
    symmetric signals.

    Parameters
    ----------
    in_channels, out_channels : int
    nside : int
        HEALPix resolution.
    K : int
        Chebyshev terms.
    hemisphere : bool
        Folded hemisphere (``V = 6 nside^2``, SHD) or full sphere (``V = 12 nside^2``, RT-ESD).
    kernel_size : {3, 1}
    impl : {"fast", "dense"}
        ``"fast"``: :math:`z = [T_k x]` by the sparse Chebyshev recursion (or the dense
        projector, ``chebyshev="dense"``), channels mixed into ``Cout R`` class outputs by one
        matmul, then the separable class stencil (:func:`separable_class_stencil`).
        ``"dense"``: dense projector, full ``(Cout, Cin K, 3, 3, 3)`` kernel, one Conv3d with
        ``V`` folded into the batch. Switchable after construction (``layer.impl = ...``).
    bias : bool
    chebyshev : {"sparse", "dense"}
        How ``impl="fast"`` applies :math:`T_k(\tilde L)`.

    Notes
    -----
    ``forward(x)``: ``x`` ``[B, Cin, V, X, Y, Z]`` -> ``[B, Cout, V, X, Y, Z]``.
    Parameters: ``theta`` ``(Cout, Cin, K)``, ``radial`` ``(Cout, Cin, R)``, ``bias``
    ``(Cout,)``.
    """

    def __init__(self, in_channels: int, out_channels: int, nside: int, K: int = 5,
                 hemisphere: bool = True, kernel_size: int = 3, impl: str = "fast",
                 bias: bool = True, chebyshev: str = "sparse"):
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, K=K)
        if kernel_size not in (1, 3):
            raise ValueError(f"kernel_size must be 1 or 3, got {kernel_size!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.nside, self.K, self.hemisphere = check_nside(nside), int(K), bool(hemisphere)
        self.kernel_size = int(kernel_size)
        self.R = 4 if self.kernel_size == 3 else 1
        self.V = n_pixels(self.nside, self.hemisphere)
        self.impl = impl
        self.chebyshev = chebyshev

        self.register_buffer("projector", _projector_tensor(self.nside, self.K, self.hemisphere),
                             persistent=False)
        lap, lap_t = _sparse_laplacian_tensors(self.nside, self.hemisphere, self.in_channels)
        self.register_buffer("laplacian", lap, persistent=False)
        self.register_buffer("laplacian_t", lap_t, persistent=False)
        self.register_buffer("classes", torch.as_tensor(_distance_classes(self.kernel_size)),
                             persistent=False)

        self.theta = nn.Parameter(torch.empty(self.out_channels, self.in_channels, self.K))
        self.radial = nn.Parameter(torch.empty(self.out_channels, self.in_channels, self.R))
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self.reset_parameters()

    # -- settings --------------------------------------------------------------------------
    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {value!r}")
        self._impl = value

    @property
    def chebyshev(self) -> str:
        return self._chebyshev

    @chebyshev.setter
    def chebyshev(self, value: str) -> None:
        if value not in CHEBYSHEV_MODES:
            raise ValueError(f"chebyshev must be one of {CHEBYSHEV_MODES}, got {value!r}")
        self._chebyshev = value

    def reset_parameters(self) -> None:
        r"""Kaiming-like init of the product kernel :math:`w_{oir} \theta_{oik}`.

        ``radial`` is uniform on :math:`[-\sqrt3, \sqrt3]` (unit second moment) and ``theta``
        normal with variance :math:`2 / (C_{in} K k^3)`, so every effective tap has the
        Kaiming variance for fan-in :math:`C_{in} K k^3`. Bias zero. Uses torch's global RNG.
        """
        fan_in = self.in_channels * self.K * self.kernel_size**3
        nn.init.normal_(self.theta, std=math.sqrt(2.0 / fan_in))
        nn.init.uniform_(self.radial, -math.sqrt(3.0), math.sqrt(3.0))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    # -- kernels built from the parameters -------------------------------------------------
    def dense_kernel(self) -> torch.Tensor:
        r"""Full Conv3d kernel :math:`\theta_{oik}\,\mathrm{radial}_{o,i,r(d)}`, ``(Cout, Cin K, k, k, k)``."""
        w = self.radial[:, :, self.classes]  # [O, I, k, k, k]
        w = self.theta[:, :, :, None, None, None] * w[:, :, None]
        k = self.kernel_size
        return w.reshape(self.out_channels, self.in_channels * self.K, k, k, k)

    def mixing_matrix(self, order: str = "ik") -> torch.Tensor:
        r"""Class mixing :math:`W_{(r,o),(i,k)} = \mathrm{radial}_{oir} \theta_{oik}`, ``(R Cout, Cin K)``.

        ``order="ki"`` orders the columns ``(k, i)`` instead.
        """
        w = self.radial.permute(2, 0, 1)[:, :, :, None] * self.theta[None]  # [R, O, I, K]
        if order == "ki":
            w = w.transpose(2, 3)
        return w.reshape(self.R * self.out_channels, self.in_channels * self.K)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Cin, V, X, Y, Z]`` -> ``[B, Cout, V, X, Y, Z]``."""
        _check_input(x, self.in_channels, self.V, min_dim=6, what=type(self).__name__, exact=True)
        if self._impl == "dense":
            y = self._forward_dense(x)
        elif self._chebyshev == "sparse":
            y = self._forward_fast_sparse(x)
        else:
            y = self._forward_fast_dense(x)
        if self.bias is not None:
            y = y + self.bias[:, None, None, None, None]
        return y

    def _forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        b, c, v, nx, ny, nz = x.shape
        s = nx * ny * nz
        z = torch.matmul(self.projector, x.reshape(b, c, v, s))  # [B, C, K V, S]
        z = z.reshape(b, c, self.K, v, nx, ny, nz).permute(0, 3, 1, 2, 4, 5, 6)
        z = z.reshape(b * v, c * self.K, nx, ny, nz)
        y = F.conv3d(z, self.dense_kernel(), padding=self.kernel_size // 2)  # [B V, O, X, Y, Z]
        return y.reshape(b, v, self.out_channels, nx, ny, nz).transpose(1, 2)

    def _forward_fast_dense(self, x: torch.Tensor) -> torch.Tensor:
        b, c, v, nx, ny, nz = x.shape
        w = self.mixing_matrix("ik").view(self.R * self.out_channels, c, self.K)
        y = self._dense_classes(x.reshape(b, c, v, nx * ny * nz), w)
        return self._apply_stencil(y.view(b, self.R, self.out_channels, v, nx, ny, nz))

    def _dense_classes(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r"""Class outputs :math:`\sum_{ik} W_{(r,o),i,k} T_k x_i`: ``x`` ``[B, C, V, S]``, ``w`` ``(R O, C, K)`` -> ``[B, R O, V S]``.

        :math:`T_0 = I`, so the class mixing starts from ``x`` itself (one GEMM) and adds the
        mixing of the other terms, ``(K - 1) V`` rows of the stacked projector at once, into
        the same output (a GEMM that accumulates): a third fewer projector multiply-adds than
        projecting all ``K`` terms, about 1.2x faster per layer on a CPU.
        """
        b, c, v, s = x.shape
        ro = w.shape[0]
        y = torch.matmul(w[:, :, 0], x.reshape(b, c, v * s))  # [B, R O, V S]
        if self.K > 1:
            z = torch.matmul(self.projector[v:], x)  # [B, C, (K - 1) V, S] = [B, C (K - 1), V S]
            rest = w[:, :, 1:].reshape(ro, c * (self.K - 1))
            y.baddbmm_(rest.expand(b, -1, -1), z.view(b, c * (self.K - 1), v * s))
        return y

    def _apply_stencil(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, R, O, V, X, Y, Z]`` class outputs -> ``[B, O, V, X, Y, Z]``."""
        return y[:, 0] if self.R == 1 else separable_class_stencil(y, 1)

    def forward_unpooled(self, coarse: torch.Tensor, skip: torch.Tensor, parent: torch.Tensor,
                         spatial: bool) -> torch.Tensor:
        r"""``self(cat([unpool(coarse), skip], 1))`` without building the unpooled concatenation.

        ``coarse`` ``[B, C1, V / 4, x, y, z]``, ``skip`` ``[B, C2, V, X, Y, Z]`` with
        ``C1 + C2 = in_channels``; ``unpool`` copies every sphere pixel to its children
        (``parent`` ``(V,)``, :class:`~shdeconv.nn.SphereUnpool`) and, when ``spatial``, every
        voxel to its 2x2x2 block (``X = 2x``). Both unpoolings are linear maps ``U`` on axes the
        other one does not touch, so the unpooled channels' class outputs are
        :math:`W (T_k U) x = U_{space} (W (T_k U_{sphere}) x)`: computed at the coarse sphere and
        space, 4 x 8 times fewer multiply-adds, and added to the skip channels' before the
        spatial stencil. The U-Net's decoder uses it with ``impl="fast"`` and
        ``chebyshev="dense"`` (the inference setting); differentiable.
        """
        b, c1, vc = coarse.shape[:3]
        c2, v = skip.shape[1], self.V
        if c1 + c2 != self.in_channels or skip.shape[2] != v or vc * 4 != v or parent.shape != (v,):
            raise ValueError(f"forward_unpooled: {tuple(coarse.shape)} + {tuple(skip.shape)} do not make "
                             f"[B, {self.in_channels}, {v}, ...] after unpooling")
        nx, ny, nz = skip.shape[-3:]
        cx, cy, cz = coarse.shape[-3:]
        if (cx, cy, cz) != ((nx // 2, ny // 2, nz // 2) if spatial else (nx, ny, nz)):
            raise ValueError(f"forward_unpooled: coarse space {(cx, cy, cz)} does not unpool to {(nx, ny, nz)}")
        ro = self.R * self.out_channels
        w = self.mixing_matrix("ik").view(ro, self.in_channels, self.K)
        y = self._dense_classes(skip.reshape(b, c2, v, nx * ny * nz), w[:, c1:].contiguous())
        # T_k U_sphere = the projector's columns summed over each coarse pixel's children
        q = torch.zeros(self.K * v, vc, dtype=self.projector.dtype, device=self.projector.device)
        q.index_add_(1, parent, self.projector)  # [K V, V / 4]
        zc = torch.matmul(q, coarse.reshape(b, c1, vc, cx * cy * cz))  # [B, C1, K V, s]
        yc = torch.matmul(w[:, :c1].reshape(ro, c1 * self.K), zc.view(b, c1 * self.K, v * cx * cy * cz))
        if spatial:
            y.view(b, ro, v, nx, ny, nz).add_(upsample_nearest2(yc.view(b, ro, v, cx, cy, cz)))
        else:
            y.add_(yc)
        y = self._apply_stencil(y.view(b, self.R, self.out_channels, v, nx, ny, nz))
        if self.bias is not None:
            y = y + self.bias[:, None, None, None, None]
        return y

    def _forward_fast_sparse(self, x: torch.Tensor) -> torch.Tensor:
        b, c, v, nx, ny, nz = x.shape
        s = nx * ny * nz
        xv = x.permute(1, 2, 0, 3, 4, 5).reshape(c * v, b * s)  # [C V, B S] (free when B = 1)
        ts = _chebyshev_recursion(self.laplacian, self.laplacian_t, xv, self.K)
        z = torch.stack(ts, dim=0).view(self.K * c, v * b * s)  # [K C, V B S]
        y = torch.matmul(self.mixing_matrix("ki"), z)  # [R O, V B S]: one GEMM
        y = y.view(self.R, self.out_channels, v, b, nx, ny, nz)
        y = y[0] if self.R == 1 else separable_class_stencil(y, 0)  # [O, V, B, X, Y, Z]
        return y.permute(2, 0, 1, 3, 4, 5)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, nside={self.nside}, K={self.K}, "
                f"hemisphere={self.hemisphere}, V={self.V}, kernel_size={self.kernel_size}, "
                f"impl={self._impl!r}, chebyshev={self._chebyshev!r}, bias={self.bias is not None}")


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------
def _check_positive(**kwargs) -> None:
    for name, value in kwargs.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_input(x: torch.Tensor, channels: int, V: int, *, min_dim: int, what: str,
                 exact: bool = False) -> None:
    if (x.dim() != min_dim) if exact else (x.dim() < min_dim):
        want = f"{min_dim}" if exact else f"at least {min_dim}"
        raise ValueError(f"{what} expects {want} dims [B, C, V, ...], got shape {tuple(x.shape)}")
    if x.shape[1] != channels or x.shape[2] != V:
        raise ValueError(f"{what} expects [B, {channels}, {V}, ...] (channels, sphere pixels), "
                         f"got shape {tuple(x.shape)}")
