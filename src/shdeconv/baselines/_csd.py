r"""CSD baselines through DIPY: single-shell CSD and multi-shell multi-tissue CSD.

Both fit the signal normalised by each voxel's mean b=0 (the units of
:class:`~shdeconv.signal.Responses`), with a DIPY gradient table built from the **world-frame**
directions, so the SH coefficients come out in the MRtrix3 world frame that ``sh2peaks`` and
``tckgen`` expect. DIPY's CSD models work in its legacy ``descoteaux07`` basis; the result is
converted to the MRtrix3 basis here (:func:`~shdeconv.sphere.sh_basis_change`).

Translation of :class:`~shdeconv.signal.Responses`:

* single shell: ``AxSymShResponse(S0=1, dwi_response=r_l)`` with the zonal coefficients of the
  chosen shell (the :math:`m=0` harmonics are the same in DIPY's and MRtrix3's bases);
* multi-shell: ``MultiShellResponse`` whose rows are the shells and whose columns are
  ``[csf_0, gm_0, wm_0, wm_2, ...]`` (DIPY's order); DIPY's isotropic coefficient
  :math:`c_t` contributes :math:`c_t\, r_{0,b}^t` to shell ``b``, so the tissue fraction of
  the forward model (:math:`\phi_t\, r^t_{0,b}/\sqrt{4\pi}`) is :math:`\phi_t = \sqrt{4\pi}\,c_t`,
  i.e. DIPY's ``volume_fractions``. With responses from :func:`estimate_responses` these
  are signal fractions: WM (:math:`\sqrt{4\pi}\,c_{00}`), GM and CSF sum to about 1.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .._options import OptionError
from ..io import B0_THRESHOLD, DWIData, bvals_shells
from ..signal import Responses, brain_mask
from ..sphere import n_coeffs, sh_basis_change

__all__ = ["csd_fit"]

logger = logging.getLogger(__name__)


#: Fewest voxels for which single-shell CSD starts joblib workers (below, one process is faster).
PARALLEL_MIN_VOXELS = 20_000


def _gradient_table(bvals, directions):
    from dipy.core.gradients import gradient_table

    b0 = bvals <= B0_THRESHOLD
    g = np.where(b0[:, None], 0.0, directions)
    return gradient_table(np.where(b0, 0.0, bvals), bvecs=g, b0_threshold=B0_THRESHOLD)


def csd_fit(dwi: DWIData, mask: np.ndarray | None, responses: Responses, *, lmax: int = 8,
            multi_shell: bool | str = "auto", data: np.ndarray | None = None, n_jobs: int = 1) -> dict:
    """Fit DIPY's CSD (one shell) or MSMT-CSD (two or more non-zero shells).

    Parameters
    ----------
    dwi : DWIData
        The data set (``directions_world`` are used, so the output is in the world frame).
    mask : ndarray ``(X, Y, Z)`` bool or None
        Voxels to fit; None uses :func:`~shdeconv.signal.brain_mask` (``dwi.mask`` where given).
        Voxels with a non-positive b=0 are always skipped.
    responses : Responses
        Must have a row for every shell used; GM/CSF are needed for MSMT.
    lmax : int
        Maximal SH degree of the fODF.
    multi_shell : {"auto", True, False}
        ``"auto"``: MSMT-CSD when the data have two or more non-zero shells and the responses
        have GM/CSF, else CSD. CSD on multi-shell data uses the highest shell only.
    data : ndarray ``(X, Y, Z, G)``, optional
        Signal to use instead of ``dwi.data`` (e.g. denoised).
    n_jobs : int
        Worker processes for single-shell CSD (DIPY's joblib engine when not 1; -1: all cores).
        Fits of fewer than :data:`PARALLEL_MIN_VOXELS` voxels run in this process, where
        starting workers would cost more than they save.

    Returns
    -------
    dict
        ``fodf``: ``(X, Y, Z, S)`` float32, MRtrix3 basis and world frame, in units of S0
        (fODF of the normalised signal); ``gm``, ``csf``: ``(X, Y, Z)`` float32 signal
        fractions, or None for single-shell CSD; ``wm``: ``(X, Y, Z)`` WM fraction
        (:math:`\\sqrt{4\\pi}\\,c_{00}`); ``algorithm``: ``"csd"`` or ``"msmt"``; ``n_jobs``:
        the worker processes used (1, or ``n_jobs`` as given).
    """
    data = dwi.data if data is None else np.asarray(data)
    bvals = np.asarray(dwi.bvals, dtype=np.float64)
    dirs = np.asarray(dwi.directions_world, dtype=np.float64)
    if mask is None:
        mask = brain_mask(dwi.data, dwi.bvals, dwi.directions_world, dwi.mask)[0] & ~dwi.bad_voxels
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != data.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match the data's {data.shape[:3]}")
    shells, idx = bvals_shells(bvals)
    b0 = bvals <= B0_THRESHOLD
    n_dw_shells = int(np.sum(shells > B0_THRESHOLD))
    if multi_shell == "auto":
        use_msmt = n_dw_shells >= 2 and responses.has_isotropic
        if n_dw_shells >= 2 and not responses.has_isotropic:
            warnings.warn("multi-shell data but no GM/CSF responses: single-shell CSD on the highest shell",
                          UserWarning, stacklevel=2)
    elif multi_shell in (True, False):
        use_msmt = bool(multi_shell)
        if use_msmt and (n_dw_shells < 2 or not responses.has_isotropic):
            raise OptionError(f"MSMT-CSD needs at least 2 non-zero shells (got {n_dw_shells}) and GM/CSF "
                              f"responses (given: {responses.has_isotropic}); use --algorithm ssst or auto")
    else:
        raise OptionError(f"multi_shell must be 'auto', True or False, got {multi_shell!r}")

    with warnings.catch_warnings():
        # DIPY's CSD models build their matrices in the legacy descoteaux07 basis and say so
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        fodf, out_iso, algorithm, fit_mask = _fit(data, bvals, dirs, mask, responses, lmax, use_msmt, shells, idx, b0,
                                                    n_jobs)
    logger.info("%s fit of %d voxels (lmax %d)", algorithm.upper(), int(fit_mask.sum()), lmax)
    s = n_coeffs(lmax)
    full = np.zeros(data.shape[:3] + (s,), dtype=np.float32)
    full[fit_mask] = fodf
    res = {"fodf": full, "gm": None, "csf": None, "algorithm": algorithm,
           "n_jobs": 1 if algorithm == "msmt" else _processes(n_jobs, int(fit_mask.sum())),
           "wm": (np.sqrt(4 * np.pi) * full[..., 0]).astype(np.float32)}
    if out_iso is not None:
        for j, name in enumerate(("csf", "gm")):
            v = np.zeros(data.shape[:3], dtype=np.float32)
            v[fit_mask] = out_iso[:, j]
            res[name] = v
    return res


def _processes(n_jobs: int, n_voxels: int) -> int:
    """Worker processes single-shell CSD uses for ``n_voxels``: ``n_jobs`` (-1: every core), or 1
    below :data:`PARALLEL_MIN_VOXELS`, where starting them costs more than they save."""
    return 1 if n_jobs == 1 or n_voxels < PARALLEL_MIN_VOXELS else n_jobs


def _fit(data, bvals, dirs, mask, responses, lmax, use_msmt, shells, idx, b0, n_jobs=1):
    """The DIPY fit itself: fODF ``(N, S)`` (MRtrix3 basis), iso ``(N, 2)`` or None, name, mask."""
    s0 = data[..., b0].mean(axis=-1)
    fit_mask = mask & np.isfinite(s0) & (s0 > 0)
    signal = data[fit_mask].astype(np.float64) / s0[fit_mask][:, None]  # (N, G)
    rows = responses.rows_for(shells)  # response row of every data shell
    s = n_coeffs(lmax)
    to_mrtrix = sh_basis_change(lmax, "descoteaux07-legacy", "mrtrix3")
    out_iso = None
    if use_msmt:
        from dipy.reconst.mcsd import MultiShellDeconvModel, MultiShellResponse

        n_l = lmax // 2 + 1
        wm = np.zeros((shells.size, n_l))
        k = min(n_l, responses.wm.shape[1])
        wm[:, :k] = responses.wm[rows, :k]
        table = np.concatenate([responses.csf[rows, None], responses.gm[rows, None], wm], axis=1)
        table[shells <= B0_THRESHOLD, 3:] = 0.0
        shell_b = np.where(shells <= B0_THRESHOLD, 0.0, shells)
        response = MultiShellResponse(table, lmax, shell_b)
        gtab = _gradient_table(bvals, dirs)
        model = MultiShellDeconvModel(gtab, response, sh_order_max=lmax, iso=2)
        coef = np.stack([model.fit(v, verbose=False).all_shm_coeff for v in signal]) if signal.size else \
            np.zeros((0, s + 2))
        coef = np.nan_to_num(coef)
        fodf = coef[:, 2:] @ to_mrtrix.T
        out_iso = np.sqrt(4 * np.pi) * coef[:, :2]  # (N, [csf, gm])
        algorithm = "msmt"
    else:
        from dipy.reconst.csdeconv import (
            AxSymShResponse,
            ConstrainedSphericalDeconvModel,
        )

        shell = int(np.argmax(shells))
        vols = b0 | (idx == shell)
        r = np.zeros(lmax // 2 + 1)
        k = min(r.size, responses.wm.shape[1])
        r[:k] = responses.wm[rows[shell], :k]
        gtab = _gradient_table(bvals[vols], dirs[vols])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # DIPY's own "more parameters" warning
            model = ConstrainedSphericalDeconvModel(gtab, AxSymShResponse(1.0, r), sh_order_max=lmax)
        if s > int(np.sum(idx == shell)):
            warnings.warn(f"lmax {lmax} needs {s} coefficients but the b={shells[shell]:g} shell has only "
                          f"{int(np.sum(idx == shell))} directions", UserWarning, stacklevel=3)
        parallel = {} if _processes(n_jobs, len(signal)) == 1 else {"engine": "joblib", "n_jobs": n_jobs}
        fit = model.fit(signal[:, vols], **parallel) if signal.size else None
        coef = np.nan_to_num(fit.shm_coeff) if fit is not None else np.zeros((0, s))
        fodf = coef @ to_mrtrix.T
        algorithm = "csd"
    return fodf, out_iso, algorithm, fit_mask
