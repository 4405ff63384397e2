r"""Resampling between measured gradient directions, the HEALPix grid and SH (pure numpy).

* Signal to grid (network input): per non-zero shell, a Laplace-Beltrami regularised
  even-order SH fit of that shell's volumes, evaluated on the (hemi)sphere grid:
  :math:`x_{b}(v) = \sum_j Y_j(u_v) [F_b s_b]_j`.
* Grid to SH (network output): the pseudo-inverse of the grid's SH matrix up to ``lmax``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..sphere import (
    hemisphere_directions,
    n_coeffs,
    pixel_directions,
    sh_fit_matrix,
    sh_matrix,
)

__all__ = ["grid_directions", "input_lmax", "signal_to_grid_matrix", "grid_to_sh_matrix"]


def grid_directions(nside: int, hemisphere: bool) -> np.ndarray:
    """Pixel directions ``(V, 3)`` of the hemisphere or the full sphere."""
    return hemisphere_directions(nside) if hemisphere else pixel_directions(nside)


def input_lmax(n_directions: int, cap: int = 8) -> int:
    """Largest even order whose coefficient count fits ``n_directions`` (at most ``cap``)."""
    lmax = 0
    while lmax + 2 <= cap and n_coeffs(lmax + 2) <= n_directions:
        lmax += 2
    return lmax


def signal_to_grid_matrix(directions, shell_index, shells, nside, hemisphere, lambda_lb=0.006, cap=8):
    """Matrix ``M`` of shape ``(n_shells, V, G)`` with ``x[b, v] = sum_g M[b, v, g] s[g]``.

    ``shells`` lists the shell rows of ``shell_index`` that become input channels (the
    non-zero shells); volumes of other shells get zero weight.
    """
    directions = np.asarray(directions, dtype=np.float64)
    shell_index = np.asarray(shell_index)
    grid = grid_directions(nside, hemisphere)
    out = np.zeros((len(shells), len(grid), len(directions)))
    for row, shell in enumerate(shells):
        sel = np.flatnonzero(shell_index == shell)
        lmax = input_lmax(len(sel), cap)
        fit = sh_fit_matrix(directions[sel], lmax, lambda_lb)
        out[row][:, sel] = sh_matrix(grid, lmax) @ fit
    return out


@lru_cache(maxsize=None)
def grid_to_sh_matrix(nside: int, hemisphere: bool, lmax: int) -> np.ndarray:
    """Pseudo-inverse of the grid SH matrix, shape ``(S, V)``."""
    b = sh_matrix(grid_directions(nside, hemisphere), lmax)
    if b.shape[0] < b.shape[1]:
        raise ValueError(f"nside {nside} has too few pixels ({b.shape[0]}) for lmax {lmax}")
    m = np.linalg.pinv(b)
    m.setflags(write=False)
    return m
