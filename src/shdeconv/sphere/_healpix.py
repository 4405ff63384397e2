"""HEALPix sampling, the hemisphere index map and the spherical graph.

This module is the one place that knows how the sphere is sampled. Every other part of
shdeconv asks it for pixel directions, the hemisphere list, the antipode map, the graph
Laplacians and the pooling maps.

Conventions
-----------
* HEALPix, NESTED ordering, ``nside = 2**k`` (1..16). ``V = 12 * nside**2`` pixels.
* Antipodes: HEALPix pixel centres come in exact antipodal pairs; ``antipode[i]`` is the
  pixel at ``-u_i``.
* Hemisphere: one pixel of every antipodal pair, kept when ``z > 0``, ties on the equator
  broken by ``y > 0`` and then ``x > 0``. ``V_H = V / 2``.
* Fold map: ``fold[p]`` is the hemisphere position of pixel ``p`` or of its antipode, so an
  antipodally symmetric full-sphere signal is ``x_full = x_hemi[..., fold]``.

All functions are pure numpy/scipy and cached: call them freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import healpy as hp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "check_nside",
    "pixel_directions",
    "antipode_map",
    "hemisphere_indices",
    "fold_map",
    "hemisphere_directions",
    "SphereGraph",
    "sphere_graph",
    "pooling_children",
    "grid_symmetries",
]

_TIE = 1e-9


def check_nside(nside: int) -> int:
    """Return ``nside`` as int, raising ``ValueError`` unless it is a power of two in 1..16."""
    n = int(nside)
    if n != nside or n < 1 or n > 16 or (n & (n - 1)) != 0:
        raise ValueError(f"nside must be a power of two between 1 and 16, got {nside!r}")
    return n


@lru_cache(maxsize=None)
def pixel_directions(nside: int) -> np.ndarray:
    """Unit vectors of all HEALPix pixel centres, NESTED order, shape ``(V, 3)``."""
    n = check_nside(nside)
    v = np.stack(hp.pix2vec(n, np.arange(hp.nside2npix(n)), nest=True), axis=1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v.setflags(write=False)
    return v


@lru_cache(maxsize=None)
def antipode_map(nside: int) -> np.ndarray:
    """``antipode[i]`` = index of the pixel at ``-u_i`` (an involution), shape ``(V,)``."""
    v = pixel_directions(nside)
    a = hp.vec2pix(check_nside(nside), -v[:, 0], -v[:, 1], -v[:, 2], nest=True).astype(np.int64)
    if not np.allclose(v[a], -v, atol=1e-12) or not np.array_equal(a[a], np.arange(len(v))):
        raise RuntimeError("HEALPix pixels are not in exact antipodal pairs")  # internal invariant
    a.setflags(write=False)
    return a


def _in_upper_hemisphere(v: np.ndarray) -> np.ndarray:
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    zt, yt = np.abs(z) <= _TIE, np.abs(y) <= _TIE
    return (z > _TIE) | (zt & (y > _TIE)) | (zt & yt & (x > 0))


@lru_cache(maxsize=None)
def hemisphere_indices(nside: int) -> np.ndarray:
    """Pixels kept on the hemisphere, in increasing NESTED order, shape ``(V/2,)``."""
    v = pixel_directions(nside)
    h = np.flatnonzero(_in_upper_hemisphere(v)).astype(np.int64)
    a = antipode_map(nside)
    if 2 * len(h) != len(v) or np.intersect1d(h, a[h]).size:
        raise RuntimeError("hemisphere selection does not split the antipodal pairs")
    h.setflags(write=False)
    return h


@lru_cache(maxsize=None)
def fold_map(nside: int) -> np.ndarray:
    """``fold[p]`` = hemisphere position of pixel ``p`` or of its antipode, shape ``(V,)``."""
    h = hemisphere_indices(nside)
    a = antipode_map(nside)
    f = np.empty(len(a), dtype=np.int64)
    f[h] = np.arange(len(h))
    f[a[h]] = np.arange(len(h))
    f.setflags(write=False)
    return f


def hemisphere_directions(nside: int) -> np.ndarray:
    """Unit vectors of the hemisphere pixels, shape ``(V/2, 3)``."""
    return pixel_directions(nside)[hemisphere_indices(nside)]


@dataclass(frozen=True)
class SphereGraph:
    """Graph of one HEALPix resolution, on the full sphere and folded onto the hemisphere.

    Attributes
    ----------
    nside : int
    weights : scipy.sparse.csr_matrix, ``(V, V)``
        Symmetric Gaussian edge weights of the k-nearest-neighbour graph.
    laplacian : ndarray, ``(V, V)``
        Normalised Laplacian :math:`L = I - D^{-1/2} W D^{-1/2}`.
    lambda_max : float
        Largest eigenvalue of ``laplacian``.
    laplacian_hemi : ndarray, ``(V/2, V/2)``
        Exact hemispherical Laplacian :math:`L^+ = L[H, H] + L[H, a(H)]`.
    """

    nside: int
    weights: sp.csr_matrix
    laplacian: np.ndarray
    lambda_max: float
    laplacian_hemi: np.ndarray

    def rescaled(self, hemisphere: bool) -> np.ndarray:
        """Chebyshev-rescaled Laplacian :math:`\\tilde L = 2L/\\lambda_{max} - I`.

        The hemisphere version uses the full sphere's ``lambda_max`` so that full-sphere and
        hemisphere filters with the same coefficients agree on symmetric signals.
        """
        lap = self.laplacian_hemi if hemisphere else self.laplacian
        return 2.0 * lap / self.lambda_max - np.eye(lap.shape[0])


@lru_cache(maxsize=None)
def sphere_graph(nside: int, k: int = 8) -> SphereGraph:
    """Build the k-nearest-neighbour graph of a HEALPix resolution (cached).

    Every pixel is linked to its ``k`` nearest pixels by chordal distance; neighbours tied
    with the k-th (to 1e-9) are linked too, so the graph is invariant under every isometry
    that maps the grid to itself (antipodes, the 16 grid symmetries). Edge weights are
    :math:`w_{ij} = \\exp(-d_{ij}^2 / (2\\rho^2))`, with :math:`\\rho` the mean neighbour
    distance. For nside 1 (12 pixels) ``k`` is capped at ``V - 1``.
    """
    n = check_nside(nside)
    v = pixel_directions(n)
    npix = len(v)
    kk = min(int(k), npix - 1)
    d = np.sqrt(np.maximum(2.0 - 2.0 * (v @ v.T), 0.0))
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, kk - 1 : kk]
    adj = d <= kth + _TIE
    adj = adj | adj.T
    rho = d[adj].mean()
    w = np.where(adj, np.exp(-np.where(adj, d, 0.0) ** 2 / (2.0 * rho**2)), 0.0)
    deg = w.sum(axis=1)
    dinv = 1.0 / np.sqrt(deg)
    lap = np.eye(npix) - dinv[:, None] * w * dinv[None, :]
    if npix <= 768:
        lmax = float(np.linalg.eigvalsh(lap)[-1])
    else:
        lmax = float(spla.eigsh(sp.csr_matrix(lap), k=1, which="LA", tol=1e-10)[0][0])
    h = hemisphere_indices(n)
    a = antipode_map(n)
    lap_h = lap[np.ix_(h, h)] + lap[np.ix_(h, a[h])]
    for arr in (lap, lap_h):
        arr.setflags(write=False)
    return SphereGraph(n, sp.csr_matrix(w), lap, lmax, lap_h)


@lru_cache(maxsize=None)
def pooling_children(nside: int, hemisphere: bool) -> np.ndarray:
    """Children of each pixel of resolution ``nside // 2`` in resolution ``nside``.

    Returns an int array of shape ``(V_parent, 4)`` indexing the child resolution: NESTED
    children ``4p .. 4p+3``. With ``hemisphere=True`` both sides are hemisphere positions:
    the parent's hemisphere pixel is unfolded to the full sphere, its children found there
    and folded back (the antipode map commutes with the NESTED hierarchy).
    """
    n = check_nside(nside)
    if n < 2:
        raise ValueError(f"cannot pool below nside 1 (got nside {nside})")
    parents = np.arange(12 * (n // 2) ** 2)
    if hemisphere:
        parents = hemisphere_indices(n // 2)
    children = parents[:, None] * 4 + np.arange(4)[None, :]
    if hemisphere:
        children = fold_map(n)[children]
    children.setflags(write=False)
    return children


def _perm_from_rotation(nside: int, q: np.ndarray) -> np.ndarray | None:
    v = pixel_directions(nside)
    w = v @ q.T
    p = hp.vec2pix(nside, w[:, 0], w[:, 1], w[:, 2], nest=True)
    if not np.allclose(v[p], w, atol=1e-9):
        return None
    return p.astype(np.int64)


@lru_cache(maxsize=None)
def grid_symmetries(nside: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The signed axis permutations ``Q`` (of the 48) that map the HEALPix grid to itself.

    Returns tuples ``(Q, perm)`` with ``Q`` a 3x3 signed permutation matrix and ``perm`` the
    pixel permutation with ``u_{perm[i]} = Q u_i``. For HEALPix these are the 16 elements of
    the group generated by 90-degree turns about z and reflections of x, y and z.
    """
    import itertools

    out = []
    for axes in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            q = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(axes, signs)):
                q[row, col] = s
            p = _perm_from_rotation(check_nside(nside), q)
            if p is not None:
                out.append((q, p))
    return tuple(out)
