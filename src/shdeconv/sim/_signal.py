r"""Multi-compartment tensor forward model for phantoms (deliberately NOT the fitting model).

Per voxel, with fibre volume fractions :math:`f_k`, directions :math:`u_k`, axial and radial
diffusivities :math:`\lambda_{\parallel,k}, \lambda_{\perp,k}`, isotropic GM-like and
CSF-like fractions :math:`f_{gm}, f_{csf}` and per-tissue proton densities :math:`S_{0,t}`,

.. math::

    S(b, g) = S_0 \Big[ S_{0,wm} \sum_k f_k\, e^{-b(\lambda_{\perp,k} +
        (\lambda_{\parallel,k} - \lambda_{\perp,k}) (g \cdot u_k)^2)}
        + S_{0,gm} f_{gm} e^{-b D_{gm}} + S_{0,csf} f_{csf} e^{-b D_{csf}} \Big]

then Rician noise :math:`|S + \sigma (n_1 + i n_2)|` with :math:`\sigma = S_0 / \mathrm{SNR}`
(SNR of the pure-WM b=0 signal). Diffusivities in mm^2/s, b in s/mm^2. Whole volumes at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["TISSUE_S0", "D_CSF", "tensor_signal", "add_rician_noise"]

#: relative b=0 signal (proton density x T2 weighting) of each tissue
TISSUE_S0 = {"wm": 1.0, "gm": 1.15, "csf": 1.35}
#: free-water diffusivity at body temperature, mm^2/s
D_CSF = 3.0e-3
_CHUNK_ELEMENTS = 1 << 22


def tensor_signal(bvals: np.ndarray, directions: np.ndarray, fibre_dirs: np.ndarray,
                  fibre_fractions: np.ndarray, lambda_par: np.ndarray, lambda_perp: np.ndarray,
                  gm: np.ndarray, csf: np.ndarray, d_gm: np.ndarray, *, s0: float = 100.0
                  ) -> np.ndarray:
    """Noise-free multi-compartment signal.

    Parameters
    ----------
    bvals : ndarray, shape ``(G,)``
    directions : ndarray, shape ``(G, 3)``
        Unit gradient directions (any frame, the same as ``fibre_dirs``).
    fibre_dirs : ndarray, shape ``(N, K, 3)``
        Unit fibre directions; rows with zero fraction are ignored.
    fibre_fractions, lambda_par, lambda_perp : ndarray, shape ``(N, K)``
        Volume fractions and diffusivities of every fibre.
    gm, csf, d_gm : ndarray, shape ``(N,)``
        Isotropic fractions and the GM-like diffusivity.
    s0 : float
        b=0 signal of pure WM.

    Returns
    -------
    ndarray, shape ``(N, G)``, float64
    """
    b = np.asarray(bvals, dtype=np.float64)
    g = np.asarray(directions, dtype=np.float64)
    lpar = np.asarray(lambda_par, dtype=np.float64)[..., None]
    lperp = np.asarray(lambda_perp, dtype=np.float64)[..., None]
    n, k = np.shape(fibre_fractions)
    wm = np.empty((n, b.size))
    step = max(1, _CHUNK_ELEMENTS // max(k * b.size, 1))  # bounded (N, K, G) temporaries
    for i in range(0, n, step):
        s = slice(i, i + step)
        cos2 = np.einsum("nkc,gc->nkg", fibre_dirs[s], g) ** 2
        att = np.exp(-b * (lperp[s] + (lpar[s] - lperp[s]) * cos2))
        wm[s] = TISSUE_S0["wm"] * np.einsum("nk,nkg->ng", fibre_fractions[s], att)
    iso = (TISSUE_S0["gm"] * gm[:, None] * np.exp(-b[None, :] * d_gm[:, None])
           + TISSUE_S0["csf"] * csf[:, None] * np.exp(-b * D_CSF)[None, :])
    return s0 * (wm + iso)


def add_rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator,
                     correlate: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Rician magnitude :math:`|S + \\sigma(n_1 + i n_2)|` of a noise-free signal (same shape).

    ``correlate``, if given, maps each Gaussian channel (same shape, standard deviation
    ``sigma``) to a correlated one of the same standard deviation before the magnitude is taken.
    """
    if sigma <= 0:
        return np.asarray(signal, dtype=np.float64).copy()
    n1 = rng.normal(scale=sigma, size=signal.shape)
    n2 = rng.normal(scale=sigma, size=signal.shape)
    if correlate is not None:
        n1, n2 = correlate(n1), correlate(n2)
    return np.sqrt((signal + n1) ** 2 + n2 ** 2)
