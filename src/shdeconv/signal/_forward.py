r"""The multi-shell, multi-tissue convolution forward model in torch (docs/method.md, section 1).

For every measured volume ``g`` (direction :math:`u_g`, shell :math:`b(g)`),

.. math::

    \hat s_g = \sum_j Y_j(u_g)\, \kappa_{b(g), j}\, c_j
             + \sum_t \phi_t\, r^{t}_{0, b(g)} / \sqrt{4\pi},
    \qquad \kappa_{b, (l, m)} = \sqrt{4\pi / (2l + 1)}\, r_{l, b},

where :math:`c` are the WM fODF SH coefficients (MRtrix3 basis), :math:`r_{l,b}` the WM
response's zonal coefficients (Funk-Hecke) and :math:`\phi_t` the isotropic tissue fractions
(GM, CSF). Responses are in units of S0, so :math:`\hat s` models :math:`S / S_0` and a
tissue fraction of 1 gives a b=0 signal of 1. The WM fraction is :math:`\sqrt{4\pi}\, c_{00}`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..sphere import n_coeffs, sh_matrix

__all__ = ["ForwardModel", "linear_deconvolution"]


class ForwardModel(nn.Module):
    """Predict normalised signals from WM SH coefficients and isotropic fractions.

    Parameters
    ----------
    directions : ndarray ``(G, 3)``
        Unit gradient directions in the frame of the SH coefficients (zeros for b=0).
    shell_index : ndarray ``(G,)``
        Row of ``wm_kernel``/``iso_response`` for each volume.
    wm_kernel : ndarray ``(n_shells, S)``
        :math:`\\kappa_{b,j}` per shell and SH coefficient (``Responses.kernel(lmax)``).
    iso_response : ndarray ``(n_shells, T)`` or None
        l=0 response coefficients of the ``T`` isotropic tissues.
    iso_names : sequence of str, optional
        Names of those tissues (default ``iso0``, ``iso1``, ...), e.g. for their output files.
    """

    def __init__(self, directions, shell_index, wm_kernel, iso_response=None, iso_names=None):
        super().__init__()
        directions = np.asarray(directions, dtype=np.float64)
        shell_index = np.asarray(shell_index, dtype=np.int64)
        wm_kernel = np.asarray(wm_kernel, dtype=np.float64)
        s = wm_kernel.shape[1]
        lmax = {n_coeffs(l): l for l in range(0, 31, 2)}.get(s)
        if lmax is None:
            raise ValueError(f"wm_kernel has {s} columns, not an even-order SH count")
        if directions.shape != (len(shell_index), 3):
            raise ValueError(f"directions {directions.shape} and shell_index {shell_index.shape} disagree")
        safe = np.where(np.linalg.norm(directions, axis=1, keepdims=True) > 0, directions, [0.0, 0.0, 1.0])
        b = sh_matrix(safe, lmax)  # b=0 rows: only l=0 survives since kappa_{b0, l>0} = 0
        a_wm = b * wm_kernel[shell_index]
        self.lmax = lmax
        self.register_buffer("a_wm", torch.as_tensor(a_wm, dtype=torch.float32), persistent=False)
        if iso_response is not None:
            iso = np.asarray(iso_response, dtype=np.float64)[shell_index] / math.sqrt(4 * math.pi)
            self.register_buffer("a_iso", torch.as_tensor(iso, dtype=torch.float32), persistent=False)
        else:
            self.a_iso = None
        names = tuple(iso_names) if iso_names is not None else tuple(f"iso{k}" for k in range(self.n_iso))
        if len(names) != self.n_iso:
            raise ValueError(f"{len(names)} names for {self.n_iso} isotropic tissues")
        self.iso_names = names

    @property
    def n_iso(self) -> int:
        return 0 if self.a_iso is None else int(self.a_iso.shape[1])

    def forward(self, wm_sh: torch.Tensor, iso: torch.Tensor | None = None) -> torch.Tensor:
        """``wm_sh`` ``[..., S']``, ``iso`` ``[..., T]`` -> predicted signal ``[..., G]``.

        ``S'`` may exceed the response's ``S`` coefficients: orders above the response's
        ``lmax`` convolve to zero, so they are dropped (they are left to the priors).
        """
        s = self.a_wm.shape[1]
        if wm_sh.shape[-1] < s:
            raise ValueError(f"the forward model needs {s} SH coefficients (lmax {self.lmax}), got {wm_sh.shape[-1]}")
        out = wm_sh[..., :s] @ self.a_wm.T
        if self.a_iso is not None and iso is not None:
            out = out + iso @ self.a_iso.T
        return out

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, volumes={self.a_wm.shape[0]}, isotropic={self.n_iso}"


def linear_deconvolution(forward_model: ForwardModel, regularisation: float = 1.0, *,
                         wm_only: bool = False) -> np.ndarray:
    r"""Regularised least-squares inverse of the forward model, shape ``(S + T, G)``.

    ``wm_only``: leave the isotropic tissues out of the model (shape ``(S, G)``); with a single
    shell their l=0 signal is indistinguishable from the WM's, so the joint split is ill-posed.

    :math:`D = (A^T A + \lambda\, \bar a\, \Lambda)^{-1} A^T` with :math:`A = [A_{wm}\ A_{iso}]`,
    :math:`\Lambda = \mathrm{diag}(l^2 (l+1)^2 / l_{max}^2 (l_{max}+1)^2)` on the WM block (0 on
    the isotropic block) and :math:`\bar a` the mean diagonal of :math:`A^T A`, so that
    ``regularisation`` is scale-free. Rotation equivariant (the penalty depends on ``l`` only).
    """
    from ..sphere import sh_degrees

    a = forward_model.a_wm.double().numpy()
    if forward_model.a_iso is not None and not wm_only:
        a = np.concatenate([a, forward_model.a_iso.double().numpy()], 1)
    ls = sh_degrees(forward_model.lmax).astype(float)
    pen = np.zeros(a.shape[1])
    pen[: len(ls)] = (ls * (ls + 1)) ** 2 / (forward_model.lmax * (forward_model.lmax + 1)) ** 2
    ata = a.T @ a
    lam = regularisation * np.mean(np.diag(ata))
    return np.linalg.solve(ata + lam * np.diag(pen + 1e-6), a.T)
