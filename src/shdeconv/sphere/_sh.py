r"""Real, even-order spherical harmonics in the MRtrix3 convention.

This module is the one place that defines the SH basis. Everything that turns directions into
SH matrices, fits signals, converts bases or rotates fODFs calls it.

Basis (MRtrix3 3.x, identical to DIPY's ``tournier07`` with ``legacy=False``)
-----------------------------------------------------------------------------
With polar angle :math:`\theta`, azimuth :math:`\phi` and the orthonormal associated
Legendre functions :math:`\bar P_l^m` (without the Condon-Shortley phase, which appears
explicitly as :math:`(-1)^m`),

.. math::

    Y_{lm}(\theta, \phi) = (-1)^m \begin{cases}
        \sqrt2\, \bar P_l^{|m|}(\cos\theta) \sin(|m|\phi) & m < 0 \\
        \bar P_l^{0}(\cos\theta) & m = 0 \\
        \sqrt2\, \bar P_l^{m}(\cos\theta) \cos(m\phi) & m > 0
    \end{cases}

i.e. :math:`\sqrt2\,\mathrm{Im}\,Y_l^{|m|}` for :math:`m<0` and
:math:`\sqrt2\,\mathrm{Re}\,Y_l^m` for :math:`m>0` of the complex harmonics with the
Condon-Shortley phase. Checked against MRtrix3 3.0.3's own ``sh2amp`` (tests/sphere).

for even :math:`l = 0, 2, \dots, l_{max}` only. Coefficient ``j`` holds
:math:`(l, m)` with :math:`j = l(l+1)/2 + m`: ``(0,0), (2,-2), (2,-1), (2,0), (2,1), (2,2),
(4,-4), ...``, so there are :math:`(l_{max}+1)(l_{max}+2)/2` coefficients (45 for lmax 8).
The basis is orthonormal on the sphere: :math:`\int Y_{lm} Y_{l'm'} = \delta`.

Shapes: directions ``(..., 3)`` or ``(G, 3)``; SH matrices ``(G, S)``; coefficients
``(..., S)``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "n_coeffs",
    "lmax_from_ncoeffs",
    "sh_degrees",
    "sh_orders",
    "cart2sphere",
    "sh_matrix",
    "sh_fit_matrix",
    "sh_fit",
    "sh_eval",
    "sh_eval_pointwise",
    "zonal_to_sh",
    "rotate_sh",
    "SH_BASES",
    "convert_sh_basis",
    "sh_basis_change",
    "dense_directions",
]


def n_coeffs(lmax: int) -> int:
    """Number of even-order coefficients up to ``lmax``: :math:`(l+1)(l+2)/2`."""
    lmax = int(lmax)
    if lmax < 0 or lmax % 2:
        raise ValueError(f"lmax must be a non-negative even integer, got {lmax}")
    return (lmax + 1) * (lmax + 2) // 2


def lmax_from_ncoeffs(n: int) -> int:
    """Inverse of :func:`n_coeffs`; raises ``ValueError`` if ``n`` is not a valid count."""
    lmax = int(round((np.sqrt(8 * n + 1) - 3) / 2))
    if lmax < 0 or lmax % 2 or n_coeffs(lmax) != n:
        raise ValueError(f"{n} is not the number of even-order SH coefficients of any lmax")
    return lmax


@lru_cache(maxsize=None)
def _lm(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    n_coeffs(lmax)  # validates lmax
    ls, ms = [], []
    for l in range(0, lmax + 1, 2):
        for m in range(-l, l + 1):
            ls.append(l)
            ms.append(m)
    return np.array(ls), np.array(ms)


def sh_degrees(lmax: int) -> np.ndarray:
    """Degree ``l`` of every coefficient, shape ``(S,)``."""
    return _lm(lmax)[0].copy()


def sh_orders(lmax: int) -> np.ndarray:
    """Order ``m`` of every coefficient, shape ``(S,)``."""
    return _lm(lmax)[1].copy()


def cart2sphere(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Polar angle and azimuth of (not necessarily unit) vectors ``(..., 3)``."""
    v = np.asarray(v, dtype=np.float64)
    r = np.linalg.norm(v, axis=-1)
    if np.any(r == 0):
        raise ValueError("cannot take the direction of a zero vector")
    theta = np.arccos(np.clip(v[..., 2] / r, -1.0, 1.0))
    phi = np.arctan2(v[..., 1], v[..., 0])
    return theta, phi


def sh_matrix(directions: np.ndarray, lmax: int) -> np.ndarray:
    r"""SH matrix :math:`B_{gj} = Y_j(u_g)` for directions ``(G, 3)``, shape ``(G, S)``.

    The azimuthal factors :math:`\cos m\phi, \sin m\phi` come from :math:`(u_x, u_y) / \rho`
    by the angle-addition recurrence: no trigonometric calls, the whole matrix 2x faster than
    with ``np.cos`` / ``np.sin`` of :math:`m \phi`, equal to rounding.
    """
    return _sh_rows(directions, lmax).T


def _sh_rows(directions: np.ndarray, lmax: int) -> np.ndarray:
    """The transpose of :func:`sh_matrix`, ``(S, G)`` and C-contiguous (one row per coefficient).

    The orthonormal associated Legendre functions :math:`\\bar P_l^m(\\cos\\theta)` (no
    Condon-Shortley phase) come from the standard stable three-term recurrence in ``l`` for each
    ``m``, started from :math:`\\bar P_m^m`; each even-``l`` value is written straight into its
    ``(l, m)`` and ``(l, -m)`` rows, times its azimuthal factor.
    """
    directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    r = np.linalg.norm(directions, axis=-1)
    if np.any(r == 0):
        raise ValueError("cannot take the direction of a zero vector")
    u = directions / r[:, None]
    out = np.empty((n_coeffs(lmax), u.shape[0]))  # n_coeffs validates lmax
    x = np.clip(u[:, 2], -1.0, 1.0)
    sin_theta = np.sqrt(np.maximum(1.0 - x * x, 0.0))
    rho = np.hypot(u[:, 0], u[:, 1])
    pole = rho == 0  # phi = atan2(0, 0) = 0 there
    rho = np.where(pole, 1.0, rho)
    c1, s1 = np.where(pole, 1.0, u[:, 0] / rho), np.where(pole, 0.0, u[:, 1] / rho)
    c, s = np.ones_like(c1), np.zeros_like(s1)  # cos(m phi), sin(m phi) by angle addition
    pmm = np.full(x.shape, np.sqrt(1.0 / (4.0 * np.pi)))
    for m in range(lmax + 1):
        if m > 0:
            pmm = pmm * np.sqrt((2.0 * m + 1.0) / (2.0 * m)) * sin_theta
            c, s = c * c1 - s * s1, s * c1 + c * s1
        factor = -np.sqrt(2.0) if m % 2 else np.sqrt(2.0)  # with the (-1)^m phase
        cos_m, sin_m = c * factor, s * factor
        p_prev, p = None, pmm
        for l in range(m, lmax + 1):
            if l == m + 1:
                p_prev, p = p, np.sqrt(2.0 * m + 3.0) * x * pmm
            elif l > m + 1:
                a = np.sqrt((4.0 * l * l - 1.0) / (l * l - m * m))
                b = np.sqrt(((l - 1.0) ** 2 - m * m) / (4.0 * (l - 1.0) ** 2 - 1.0))
                p_prev, p = p, a * (x * p - b * p_prev)
            if l % 2:
                continue
            centre = l * (l + 1) // 2
            if m == 0:
                out[centre] = p
                continue
            np.multiply(p, cos_m, out=out[centre + m])
            np.multiply(p, sin_m, out=out[centre - m])
    return out


def _lb_penalty(lmax: int) -> np.ndarray:
    ls = sh_degrees(lmax).astype(np.float64)
    return (ls * (ls + 1.0)) ** 2


def sh_fit_matrix(directions: np.ndarray, lmax: int, lambda_lb: float = 0.006) -> np.ndarray:
    r"""Regularised least-squares fitting matrix, shape ``(S, G)``.

    :math:`F = (B^T B + \lambda\, \mathrm{diag}(l^2 (l+1)^2))^{-1} B^T`, the
    Laplace-Beltrami regularised fit used by DIPY's ``QballModel`` and Descoteaux 2007.
    ``lambda_lb = 0`` gives the plain pseudo-inverse.
    """
    b = sh_matrix(directions, lmax)
    if lambda_lb == 0:
        return np.linalg.pinv(b)
    a = b.T @ b + lambda_lb * np.diag(_lb_penalty(lmax))
    return np.linalg.solve(a, b.T)


def sh_fit(values: np.ndarray, directions: np.ndarray, lmax: int, lambda_lb: float = 0.006) -> np.ndarray:
    """Fit SH coefficients to samples ``(..., G)`` at ``directions`` ``(G, 3)`` -> ``(..., S)``."""
    f = sh_fit_matrix(directions, lmax, lambda_lb)
    return np.asarray(values) @ f.T


def sh_eval(coeffs: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Evaluate coefficients ``(..., S)`` at directions ``(G, 3)`` -> ``(..., G)``."""
    coeffs = np.asarray(coeffs)
    lmax = lmax_from_ncoeffs(coeffs.shape[-1])
    return coeffs @ sh_matrix(directions, lmax).T


def sh_eval_pointwise(coeffs: np.ndarray, directions: np.ndarray) -> np.ndarray:
    r"""Evaluate each row of coefficients at its own directions.

    ``coeffs`` ``(N, S)`` and ``directions`` ``(N, K, 3)`` give ``(N, K)``:
    :math:`f_{nk} = \sum_j c_{nj} Y_j(u_{nk})`. The same as ``sh_eval(coeffs[n], directions[n])``
    row by row, without an ``(N, K, S)`` matrix in the layout of :func:`sh_matrix`.
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    if coeffs.ndim != 2 or directions.ndim != 3 or directions.shape[::2] != (coeffs.shape[0], 3):
        raise ValueError(f"coeffs (N, S) and directions (N, K, 3) must agree, got {coeffs.shape} and "
                         f"{directions.shape}")
    n, k = directions.shape[:2]
    rows = _sh_rows(directions.reshape(-1, 3), lmax_from_ncoeffs(coeffs.shape[1])).reshape(-1, n, k)
    return np.einsum("snk,sn->nk", rows, coeffs.T)


def zonal_to_sh(zonal: np.ndarray, direction: np.ndarray, lmax: int) -> np.ndarray:
    r"""SH coefficients of the axially symmetric function with zonal coefficients ``zonal``.

    ``zonal[i]`` is the :math:`m=0` coefficient of degree ``2i`` when the symmetry axis is
    ``z``. Rotated to unit vector ``direction`` the coefficients are
    :math:`c_{lm} = z_l \sqrt{4\pi/(2l+1)}\, Y_{lm}(u)`.
    """
    zonal = np.asarray(zonal, dtype=np.float64)
    ls = sh_degrees(lmax)
    z = np.zeros(lmax // 2 + 1)
    z[: min(len(zonal), len(z))] = zonal[: len(z)]
    y = sh_matrix(np.asarray(direction, dtype=np.float64).reshape(1, 3), lmax)[0]
    return z[ls // 2] * np.sqrt(4.0 * np.pi / (2.0 * ls + 1.0)) * y


@lru_cache(maxsize=None)
def dense_directions(n: int = 2000) -> np.ndarray:
    """``n`` near-uniform unit vectors on the sphere (Fibonacci lattice), shape ``(n, 3)``."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (1.0 + 5**0.5) * i
    v = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    v.setflags(write=False)
    return v


#: voxels per float64 block of :func:`rotate_sh` on float32 input (a few MB)
_ROTATE_BLOCK = 32768


def rotate_sh(coeffs: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Coefficients of :math:`f'(u) = f(Q^T u)` for an orthogonal 3x3 ``Q`` (proper or not).

    Even-order SH spaces are closed under ``O(3)``, so a least-squares refit on a dense
    sphere is exact to rounding: :math:`c' = B(U)^+ B(U Q) c`. Shape ``(..., S)``.
    ``float32`` input gives ``float32`` output (computed in ``float64``, a block of voxels at a
    time: no double-precision copy of a whole-brain volume); other input gives ``float64``.
    """
    coeffs = np.asarray(coeffs)
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (3, 3) or not np.allclose(q @ q.T, np.eye(3), atol=1e-6):
        raise ValueError(f"rotate_sh needs an orthogonal 3x3 matrix, got {q!r}")
    lmax = lmax_from_ncoeffs(coeffs.shape[-1])
    u = dense_directions(max(600, 4 * n_coeffs(lmax)))
    m = np.linalg.pinv(sh_matrix(u, lmax)) @ sh_matrix(u @ q, lmax)
    if coeffs.dtype != np.float32:
        return coeffs @ m.T
    flat = coeffs.reshape(-1, coeffs.shape[-1])
    out = np.empty(flat.shape, np.float32)
    for i in range(0, len(flat), _ROTATE_BLOCK):
        out[i:i + _ROTATE_BLOCK] = flat[i:i + _ROTATE_BLOCK] @ m.T
    return out.reshape(coeffs.shape)


#: SH bases by name: (DIPY's basis function, legacy). MRtrix3's is DIPY's tournier07 (legacy=False);
#: ``descoteaux07-legacy`` is the basis DIPY's own CSD fits in.
SH_BASES = {"mrtrix3": ("tournier07", False), "tournier07": ("tournier07", False),
            "descoteaux07": ("descoteaux07", False), "descoteaux07-legacy": ("descoteaux07", True)}


def convert_sh_basis(coeffs: np.ndarray, source: str, target: str) -> np.ndarray:
    """Convert even-order coefficients ``(..., S)`` between the bases of :data:`SH_BASES`.

    The conversion matrix ``M`` (``c_target = M c_source``) is the least-squares map between the
    two bases evaluated on a dense sphere (a signed permutation), computed once per order.
    """
    for b in (source, target):
        if b not in SH_BASES:
            raise ValueError(f"unknown SH basis {b!r}; expected one of {sorted(SH_BASES)}")
    coeffs = np.asarray(coeffs)
    if SH_BASES[source] == SH_BASES[target]:
        return coeffs.copy()
    lmax = lmax_from_ncoeffs(coeffs.shape[-1])
    return coeffs @ sh_basis_change(lmax, source, target).T


@lru_cache(maxsize=None)
def sh_basis_change(lmax: int, source: str, target: str) -> np.ndarray:
    """``(S, S)`` matrix ``M`` with ``c_target = M c_source`` (see :func:`convert_sh_basis`)."""
    import warnings

    from dipy.reconst.shm import real_sh_descoteaux, real_sh_tournier

    u = dense_directions(max(600, 4 * n_coeffs(lmax)))
    theta, phi = cart2sphere(u)

    def basis(name: str) -> np.ndarray:
        kind, legacy = SH_BASES[name]
        if (kind, legacy) == ("tournier07", False):
            return sh_matrix(u, lmax)  # ours, checked against MRtrix3's sh2amp
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # DIPY deprecates the legacy bases
            fn = real_sh_descoteaux if kind == "descoteaux07" else real_sh_tournier
            return fn(lmax, theta, phi, legacy=legacy)[0]

    m = np.linalg.lstsq(basis(target), basis(source), rcond=None)[0]
    m[np.abs(m) < 1e-9] = 0.0
    return m
