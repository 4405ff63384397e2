r"""Chebyshev polynomials of the rescaled graph Laplacian, dense and sparse.

Precompute only: pure numpy/scipy, cached, the one place with Python loops over ``k``.
The layers in :mod:`shdeconv.nn._conv` turn these arrays into non-persistent buffers.

Two ways to apply :math:`T_k(\tilde L)` to a signal ``x`` of shape ``[..., V, ...]``:

* dense: one matrix product with the stacked projector
  :math:`P = [T_0(\tilde L); \dots; T_{K-1}(\tilde L)]` of shape ``(K V, V)``;
* sparse: the three-term recursion :math:`T_k x = 2 \tilde L\, T_{k-1} x - T_{k-2} x` with
  the sparse :math:`\tilde L` (about 9 non-zeros a row), ``K - 1`` sparse products.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from ..sphere import check_nside, sphere_graph

__all__ = ["chebyshev_projector", "rescaled_laplacian", "sparse_rescaled_laplacian", "n_pixels"]

_DROP = 1e-13


def _check_K(K: int) -> int:
    k = int(K)
    if k != K or k < 1:
        raise ValueError(f"K (number of Chebyshev terms) must be a positive integer, got {K!r}")
    return k


def n_pixels(nside: int, hemisphere: bool) -> int:
    """Number of graph vertices: ``12 nside^2`` (full sphere) or ``6 nside^2`` (hemisphere)."""
    n = check_nside(nside)
    return 12 * n * n // (2 if hemisphere else 1)


@lru_cache(maxsize=None)
def rescaled_laplacian(nside: int, hemisphere: bool) -> np.ndarray:
    r"""Dense :math:`\tilde L = 2 L / \lambda_{max} - I`, float64, shape ``(V, V)`` (read-only).

    On the hemisphere this is the exact folded :math:`\tilde L^+` (full sphere's
    :math:`\lambda_{max}`), see :meth:`shdeconv.sphere.SphereGraph.rescaled`.
    """
    lt = np.array(sphere_graph(check_nside(nside)).rescaled(bool(hemisphere)), dtype=np.float64)
    lt.setflags(write=False)
    return lt


@lru_cache(maxsize=None)
def sparse_rescaled_laplacian(nside: int, hemisphere: bool) -> sp.csr_matrix:
    """:func:`rescaled_laplacian` as a CSR matrix (entries below 1e-13 in magnitude dropped)."""
    lt = rescaled_laplacian(nside, hemisphere)
    return sp.csr_matrix(np.where(np.abs(lt) > _DROP, lt, 0.0))


@lru_cache(maxsize=None)
def chebyshev_projector(nside: int, K: int, hemisphere: bool) -> np.ndarray:
    r"""Stacked Chebyshev polynomials of the rescaled Laplacian.

    .. math::

        P = \begin{bmatrix} T_0(\tilde L) \\ \vdots \\ T_{K-1}(\tilde L) \end{bmatrix},
        \quad T_0 = I,\; T_1 = \tilde L,\; T_k = 2 \tilde L T_{k-1} - T_{k-2}.

    Parameters
    ----------
    nside : int
        HEALPix resolution (power of two, 1..16).
    K : int
        Number of Chebyshev terms (polynomial degree ``K - 1``).
    hemisphere : bool
        Use the folded hemisphere Laplacian (``V = 6 nside^2``) instead of the full sphere
        (``V = 12 nside^2``).

    Returns
    -------
    ndarray
        float64, shape ``(K V, V)``, read-only; rows ``k V .. (k+1) V - 1`` hold
        :math:`T_k(\tilde L)`.
    """
    k_terms = _check_K(K)
    lt = rescaled_laplacian(nside, hemisphere)
    v = lt.shape[0]
    out = np.empty((k_terms * v, v), dtype=np.float64)
    out[:v] = np.eye(v)
    if k_terms > 1:
        out[v : 2 * v] = lt
    for k in range(2, k_terms):
        out[k * v : (k + 1) * v] = 2.0 * lt @ out[(k - 1) * v : k * v] - out[(k - 2) * v : (k - 1) * v]
    out.setflags(write=False)
    return out
