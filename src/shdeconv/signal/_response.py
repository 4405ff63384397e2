r"""Tissue response functions: the one response model of shdeconv (docs/method.md, section 1).

A :class:`Responses` holds, per shell, the zonal SH coefficients :math:`r_{l,b}` (MRtrix3
convention, the numbers of an MRtrix3 response file) of the single-fibre WM response along
``z`` and the :math:`l=0` coefficients of the isotropic GM and CSF responses, all in units
of S0 (signal divided by the voxel's mean b=0). With these, the Funk-Hecke theorem gives the
convolution of an fODF with SH coefficients :math:`c_{lm}` as

.. math:: (R_b * f)_{lm} = \sqrt{4\pi / (2l+1)}\; r_{l,b}\; c_{lm},

which :meth:`Responses.kernel` tabulates.

Estimation (:func:`estimate_responses`) follows MRtrix3's and DIPY's practice:

* WM: the voxels of highest fractional anisotropy (tensor fit, FA above ``wm_fa``, at most
  ``wm_max_voxels``) are taken as single-fibre voxels. The gradient directions of every such
  voxel are rotated so that its principal eigenvector lies along ``z``; the normalised
  signals of all of them are then fitted, shell by shell, by a zonal (:math:`m=0` only)
  least-squares expansion :math:`s(g) = \sum_l r_{l,b} Y_{l0}(g \cdot e_1)`. This is exact
  for any axially symmetric response, not only a tensor.
* GM and CSF (only with at least two non-zero shells): low-FA voxels with low mean
  diffusivity (GM) or high mean diffusivity (CSF), as DIPY's ``mask_for_response_msmt``;
  the per-shell mean normalised signal times :math:`\sqrt{4\pi}` is the :math:`l=0`
  coefficient.

Units: every tissue is normalised by its own voxels' b=0 signal, so every b=0 row is
:math:`[\sqrt{4\pi}, 0, \dots]` and tissue fractions are signal fractions (they sum to one
at b=0). ``s0_scale`` (raw signal per unit S0, the median b=0 of the WM voxels) turns them
into the raw units of MRtrix3's files.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.special import eval_legendre

from ..io import (
    B0_THRESHOLD,
    InputError,
    bvals_shells,
    read_response_file,
    write_response_file,
)
from ..sphere import sh_degrees

__all__ = ["Responses", "estimate_responses", "wm_s0_scale", "zonal_design"]

logger = logging.getLogger(__name__)

SQRT_4PI = float(np.sqrt(4.0 * np.pi))


def zonal_design(cos_angle: np.ndarray, lmax: int) -> np.ndarray:
    r"""Zonal harmonics :math:`Y_{l0}(\theta) = \sqrt{(2l+1)/4\pi}\, P_l(\cos\theta)`.

    Parameters
    ----------
    cos_angle : ndarray ``(N,)``
        Cosine of the angle to the symmetry axis.
    lmax : int
        Even maximal degree.

    Returns
    -------
    ndarray ``(N, lmax//2 + 1)``
    """
    t = np.asarray(cos_angle, dtype=np.float64).ravel()
    ls = np.arange(0, lmax + 1, 2)
    return np.stack([np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, t) for l in ls], axis=1)


@dataclass(frozen=True)
class Responses:
    """Per-shell tissue responses in units of S0.

    Attributes
    ----------
    bvals : ndarray ``(n_shells,)``
        Shell b-values, b=0 shell first when present.
    wm : ndarray ``(n_shells, lmax//2 + 1)``
        Zonal SH coefficients (MRtrix3 convention) of the single-fibre response along ``z``;
        the b=0 row is ``[sqrt(4 pi), 0, ...]``.
    gm, csf : ndarray ``(n_shells,)`` or None
        :math:`l=0` coefficients of the isotropic responses (b=0 entry ``sqrt(4 pi)``).
    s0_scale : float
        Raw signal units per unit S0.
    """

    bvals: np.ndarray
    wm: np.ndarray
    gm: np.ndarray | None = None
    csf: np.ndarray | None = None
    s0_scale: float = 1.0

    def __post_init__(self):
        bvals = np.atleast_1d(np.asarray(self.bvals, dtype=np.float64))
        wm = np.atleast_2d(np.asarray(self.wm, dtype=np.float64))
        if wm.shape[0] != bvals.size:
            raise ValueError(f"wm response has {wm.shape[0]} rows but there are {bvals.size} shells")
        object.__setattr__(self, "bvals", bvals)
        object.__setattr__(self, "wm", wm)
        for name in ("gm", "csf"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.float64).ravel()
                if v.size != bvals.size:
                    raise ValueError(f"{name} response has {v.size} entries but there are {bvals.size} shells")
                object.__setattr__(self, name, v)
        if (self.gm is None) != (self.csf is None):
            raise ValueError("gm and csf responses must be given together (or neither)")
        if not (np.isfinite(self.s0_scale) and self.s0_scale > 0):
            raise ValueError(f"s0_scale must be a positive number, got {self.s0_scale}")
        object.__setattr__(self, "s0_scale", float(self.s0_scale))

    # ------------------------------------------------------------------ properties
    @property
    def n_shells(self) -> int:
        """Number of shells (rows)."""
        return int(self.bvals.size)

    @property
    def has_isotropic(self) -> bool:
        """Whether GM and CSF responses are present."""
        return self.gm is not None

    @property
    def lmax(self) -> int:
        """Largest degree of the WM response."""
        return 2 * (self.wm.shape[1] - 1)

    def kernel(self, lmax: int) -> np.ndarray:
        r"""Per-shell convolution kernel, shape ``(n_shells, n_coeffs(lmax))``.

        Entry ``[b, j]`` is :math:`\sqrt{4\pi/(2l_j+1)}\, r_{l_j, b}` (Funk-Hecke), the same
        for every order ``m`` of degree ``l_j``; degrees beyond the response's are 0. The
        convolved fODF of shell ``b`` is ``kernel[b] * c``.
        """
        ls = sh_degrees(lmax)
        r = np.zeros((self.n_shells, lmax // 2 + 1))
        k = min(r.shape[1], self.wm.shape[1])
        r[:, :k] = self.wm[:, :k]
        return np.sqrt(4.0 * np.pi / (2.0 * ls + 1.0))[None, :] * r[:, ls // 2]

    def rows_for(self, bvals: np.ndarray, tol: float | None = None) -> np.ndarray:
        """Row of this response for every volume of ``bvals`` ``(G,)`` (nearest shell).

        Raises ``ValueError`` when a volume is further than ``tol`` (default: 10% of its
        b-value, at least 100) from every shell.
        """
        bvals = np.asarray(bvals, dtype=np.float64).ravel()
        d = np.abs(bvals[:, None] - self.bvals[None, :])
        rows = np.argmin(d, axis=1)
        lim = np.maximum(100.0, 0.1 * bvals) if tol is None else np.full(bvals.shape, float(tol))
        far = d[np.arange(bvals.size), rows] > lim
        if far.any():
            raise ValueError(f"b-value {bvals[far][0]:g} has no response shell (shells {self.bvals.round().tolist()})")
        return rows

    # ------------------------------------------------------------------ files
    def to_files(self, outdir: str | PathLike) -> dict[str, str]:
        """Write ``response_wm.txt`` (and ``response_gm.txt``, ``response_csf.txt``).

        Files are MRtrix3 response files in raw units (coefficients times ``s0_scale``)
        with a ``# Shells:`` comment. With two or more non-zero shells every row is written,
        b=0 included, as ``dwi2response dhollander`` does (for ``dwi2fod msmt_csd``); with a
        single non-zero shell only that shell's row, which is what ``dwi2fod csd`` accepts.

        Returns
        -------
        dict
            ``{"response_wm": "response_wm.txt", ...}``, names relative to ``outdir``.
        """
        outdir = Path(outdir)
        nonzero = self.bvals > B0_THRESHOLD
        rows = np.arange(self.n_shells) if nonzero.sum() >= 2 else np.flatnonzero(nonzero)
        shells = self.bvals[rows].round(0)
        shells[shells <= B0_THRESHOLD] = 0.0
        comment = "shdeconv response (raw signal units; S0 scale {:.6g})".format(self.s0_scale)
        files = {}
        tissues = {"wm": self.wm}
        if self.has_isotropic:
            tissues.update(gm=self.gm[:, None], csf=self.csf[:, None])
        for name, coeffs in tissues.items():
            fname = f"response_{name}.txt"
            write_response_file(outdir / fname, coeffs[rows] * self.s0_scale, shells=shells, comment=comment)
            files[f"response_{name}"] = fname
        return files

    @classmethod
    def from_files(cls, wm, gm=None, csf=None, *, bvals_of_data,
                   s0_scale: float | Callable[[], float] | None = None, tol: float | None = None) -> "Responses":
        """Read MRtrix3 response files and match their rows to the data's shells.

        Parameters
        ----------
        wm, gm, csf : str or PathLike
            Response files (``gm`` and ``csf`` together or neither).
        bvals_of_data : ndarray ``(G,)``
            b-values of the data; the result has one row per shell of
            :func:`~shdeconv.io.bvals_shells`.
        s0_scale : float or callable, optional
            Raw signal per unit S0 of the WM response, for a WM file without a b=0 row (the
            single-shell files of ``dwi2response`` and of :meth:`to_files`): e.g.
            :func:`wm_s0_scale` of the data, or a function returning it, called only when
            needed. A WM file with a b=0 row is normalised by that row (its own S0), whatever
            is passed here; without one, ``s0_scale`` is required.
        tol : float, optional
            Largest b-value difference between a file row and a data shell (default 10% of
            the b-value, at least 100).

        Rows are matched by the ``# Shells:`` comment when present, else by count (one row
        per data shell, or one per non-zero shell). A missing b=0 row is
        ``[sqrt(4 pi), 0, ...]``. GM/CSF are normalised by their own b=0 row when they have
        one (signal fractions, as :func:`estimate_responses`), else by ``s0_scale``.

        Raises
        ------
        InputError
            Malformed file, shells not matching the data, or no way to find the S0 scale.
        """
        if (gm is None) != (csf is None):
            raise InputError(gm if gm is not None else csf, "gm and csf response files must be given together")
        shells, _ = bvals_shells(bvals_of_data)
        rows_wm, has_b0 = _match_rows(wm, shells, tol)
        has_data_b0 = shells[0] <= B0_THRESHOLD
        if has_b0:
            s0_scale = rows_wm[0, 0] / SQRT_4PI
        elif s0_scale is None:
            raise InputError(wm, "the response has no b=0 row, so its S0 scale is unknown; pass s0_scale")
        elif callable(s0_scale):
            s0_scale = s0_scale()
        if not (np.isfinite(s0_scale) and s0_scale > 0):
            raise InputError(wm, f"cannot normalise the response: S0 scale {s0_scale} is not positive")
        wm_n = rows_wm / s0_scale
        if has_data_b0 and not has_b0:
            wm_n[0] = 0.0
            wm_n[0, 0] = SQRT_4PI
        if np.any(wm_n[:, 0] <= 0):
            raise InputError(wm, "the WM response has a non-positive l=0 coefficient")
        iso = []
        for path in (gm, csf):
            if path is None:
                iso.append(None)
                continue
            r, b0_present = _match_rows(path, shells, tol)
            r = r[:, 0]
            if b0_present and has_data_b0 and r[0] > 0:
                r = r * (SQRT_4PI / r[0])
            else:
                r = r / s0_scale
                if has_data_b0 and not b0_present:
                    r[0] = SQRT_4PI
            iso.append(r)
        return cls(bvals=shells, wm=wm_n, gm=iso[0], csf=iso[1], s0_scale=float(s0_scale))


def _match_rows(path, shells: np.ndarray, tol: float | None) -> tuple[np.ndarray, bool]:
    """Rows of response file ``path`` for the data shells ``(n_shells,)``.

    Returns the ``(n_shells, n_l)`` rows (b=0 row zero when the file has none) and whether
    the file had a b=0 row.
    """
    coeffs, file_shells = read_response_file(path)
    has_data_b0 = shells[0] <= B0_THRESHOLD
    dw_shells = shells[1:] if has_data_b0 else shells
    out = np.zeros((shells.size, coeffs.shape[1]))
    if file_shells is not None:
        fb = np.asarray(file_shells, dtype=np.float64)
        for i, b in enumerate(shells):
            d = np.abs(fb - b)
            j = int(np.argmin(d))
            lim = max(100.0, 0.1 * b) if tol is None else tol
            if d[j] > lim:
                if b <= B0_THRESHOLD:
                    continue  # a b=0 row is optional
                raise InputError(path, f"no response row for the data's b={b:g} shell; the file has shells "
                                 f"{[float(f'{x:g}') for x in fb]}")
            out[i] = coeffs[j]
        has_b0 = bool(np.any(fb <= B0_THRESHOLD))
        return out, has_b0 and has_data_b0
    if coeffs.shape[0] == shells.size:
        return coeffs.copy(), bool(has_data_b0)
    if coeffs.shape[0] == dw_shells.size:
        out[-dw_shells.size:] = coeffs
        return out, False
    raise InputError(path, f"{coeffs.shape[0]} response rows and no Shells comment, but the data has "
                     f"{shells.size} shells {shells.round().tolist()}")


#: Voxels per chunk of the tensor fit in :func:`estimate_responses`
_TENSOR_CHUNK = 65536


def _tensor_volumes(bvals: np.ndarray) -> np.ndarray:
    """Volumes of the tensor fit ``(G,)`` bool: b=0 and b <= 1600, or b=0 and the lowest shell
    when fewer than six directions have b <= 1600. Idempotent: applied to its own selection it
    keeps every volume."""
    b0 = bvals <= B0_THRESHOLD
    use = b0 | (bvals <= 1600)
    if use.sum() - b0.sum() < 6:  # not enough low-b directions: the lowest shell instead
        shells, idx = bvals_shells(bvals)
        first = 1 if b0.any() else 0
        use = b0 | (idx == first)
    return use


def _tensor_fit(s: np.ndarray, bvals: np.ndarray, directions: np.ndarray):
    """DTI (WLS) on normalised signals ``(N, G)``: FA ``(N,)``, MD ``(N,)``, e1 ``(N, 3)``.

    Uses the b=0 volumes and the shells up to b=1600 (or, with fewer than six such directions,
    the lowest shell), where the tensor model holds. Weighted linear least squares on
    ``log s`` with weights ``exp(X beta_OLS)^2`` (Chung et al. 2006; DIPY's ``WLS``), solved
    through the 7 x 7 normal equations of every voxel at once rather than a pseudo-inverse
    per voxel; eigenvalues below zero are clipped to zero (as DIPY does).
    """
    use = _tensor_volumes(bvals)
    b0 = bvals <= B0_THRESHOLD
    b = bvals[use]
    g = np.where(b0[use, None], 0.0, directions[use])
    x = np.column_stack([-b * g[:, 0] ** 2, -2 * b * g[:, 0] * g[:, 1], -b * g[:, 1] ** 2,
                         -2 * b * g[:, 0] * g[:, 2], -2 * b * g[:, 1] * g[:, 2], -b * g[:, 2] ** 2,
                         np.ones(b.size)])  # (G, 7): Dxx Dxy Dyy Dxz Dyz Dzz log S0
    y = np.log(np.maximum(s[:, use], 1e-6))  # (N, G)
    w2 = np.exp(2.0 * (y @ np.linalg.pinv(x).T) @ x.T)  # squared OLS-predicted signal
    normal = np.einsum("ng,gi,gj->nij", w2, x, x, optimize=True)
    beta = np.linalg.solve(normal, ((w2 * y) @ x)[..., None])[..., 0]
    dxx, dxy, dyy, dxz, dyz, dzz = beta[:, :6].T
    tensor = np.stack([np.stack([dxx, dxy, dxz], -1), np.stack([dxy, dyy, dyz], -1),
                       np.stack([dxz, dyz, dzz], -1)], -2)
    evals, evecs = np.linalg.eigh(tensor)  # ascending
    evals = np.clip(evals, 0.0, None)
    md = evals.mean(axis=1)
    num = ((evals[:, 0] - evals[:, 1]) ** 2 + (evals[:, 1] - evals[:, 2]) ** 2 + (evals[:, 2] - evals[:, 0]) ** 2)
    den = (evals ** 2).sum(axis=1)
    fa = np.sqrt(0.5 * num / np.where(den > 0, den, 1.0)) * (den > 0)
    e1 = evecs[:, :, 2]
    return np.nan_to_num(fa), np.nan_to_num(md), np.nan_to_num(e1)


def _tensor_survey(data: np.ndarray, bvals: np.ndarray, directions: np.ndarray, mask: np.ndarray):
    """A tensor fit of every voxel of ``mask`` with a positive, finite b=0 signal (and finite
    volumes): their mean b=0 ``s0``, ``fa``, ``md`` and principal direction ``e1`` (each
    ``(n,)`` or ``(n, 3)``) and their indices ``voxels`` (a tuple of arrays into ``mask``)."""
    mask = np.asarray(mask, dtype=bool)
    if data.shape[:-1] != mask.shape or data.shape[-1] != bvals.size or directions.shape != (bvals.size, 3):
        raise ValueError(f"inconsistent shapes: data {data.shape}, mask {mask.shape}, bvals {bvals.shape}, "
                         f"directions {directions.shape}")
    b0 = bvals <= B0_THRESHOLD
    if not b0.any():
        raise ValueError("b=0 volumes are needed to normalise the signal")
    # Every voxel needs only the tensor fit's volumes; whole rows are read for the few selected
    # voxels below. The mask's voxels are fitted in chunks, each gathered from the volumes
    # (contiguous in nibabel's Fortran order) in the data's own precision: no copy of the
    # tensor volumes over the whole mask (0.56 GB on HCP-sized data) and no (N, G) float64
    # temporaries of the WLS fit (GBs). The chunks are those the fit always had: same numbers.
    tcols = np.flatnonzero(_tensor_volumes(bvals))
    b0_cols = b0[tcols]
    where = np.nonzero(mask)
    fortran = data.flags.f_contiguous and data.ndim > 2
    if fortran:  # flat indices into each volume: a third of the time of indexing with the tuple
        flat = np.ravel_multi_index(where, mask.shape, order="F")
    dtype = np.result_type(data.dtype, np.float32)
    fits, s0_parts, ok_parts = [], [], []
    for i in range(0, where[0].size, _TENSOR_CHUNK):
        part = flat[i:i + _TENSOR_CHUNK] if fortran else tuple(w[i:i + _TENSOR_CHUNK] for w in where)
        sub = np.empty((len(part) if fortran else part[0].size, tcols.size), dtype=dtype)
        finite = np.ones(sub.shape[0], dtype=bool)
        j = 0
        for g in range(bvals.size):
            col = data[..., g].ravel(order="F")[part] if fortran else data[..., g][part]
            finite &= np.isfinite(col)
            if j < tcols.size and tcols[j] == g:
                sub[:, j] = col
                j += 1
        s0_chunk = sub[:, b0_cols].astype(np.float64).mean(axis=1)
        keep = np.isfinite(s0_chunk) & (s0_chunk > 0) & finite
        if keep.any():
            fits.append(_tensor_fit(sub[keep] / s0_chunk[keep, None], bvals[tcols], directions[tcols]))
        s0_parts.append(s0_chunk)
        ok_parts.append(keep)
    s0, ok = np.concatenate(s0_parts), np.concatenate(ok_parts)
    if not ok.any():
        raise ValueError("no voxel in the mask has a positive, finite b=0 signal")
    fa, md, e1 = (np.concatenate(parts) for parts in zip(*fits))
    s0 = s0[ok]
    voxels = tuple(w[ok] for w in where)
    return s0, fa, md, e1, voxels


def _wm_voxels(fa: np.ndarray, wm_fa: float, wm_min_voxels: int, wm_max_voxels: int):
    """The single-fibre WM voxels among the surveyed ones: the decreasing-FA ``order`` and the
    selection ``order[:n]``, FA above ``wm_fa`` (at most ``wm_max_voxels``), else the
    ``wm_min_voxels`` highest (with a warning)."""
    order = np.argsort(-fa, kind="stable")
    n_pass = int(np.sum(fa > wm_fa))
    n_sel = min(max(n_pass, min(wm_min_voxels, fa.size)), wm_max_voxels)
    if n_pass < min(wm_min_voxels, fa.size):
        warnings.warn(f"only {n_pass} voxels have FA > {wm_fa}; using the {n_sel} highest-FA voxels "
                      f"(FA >= {fa[order[n_sel - 1]]:.2f}) for the WM response", UserWarning, stacklevel=3)
    return order, order[:n_sel]


def wm_s0_scale(data: np.ndarray, bvals: np.ndarray, directions_world: np.ndarray, mask: np.ndarray, *,
                wm_fa: float = 0.7, wm_max_voxels: int = 300, wm_min_voxels: int = 30) -> float:
    """Median b=0 signal of the voxels :func:`estimate_responses` takes as single-fibre WM.

    The raw signal per unit S0 of a WM response estimated from these data, the same number as
    that function's ``Responses.s0_scale``: what turns a response file without a b=0 row (the
    single-shell files of ``dwi2response`` and of this package) into signal fractions. Shapes
    as :func:`estimate_responses`.
    """
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    s0, fa, _, _, _ = _tensor_survey(np.asarray(data), bvals, np.asarray(directions_world, dtype=np.float64), mask)
    with warnings.catch_warnings():  # the voxel choice is the estimator's; here it only sets a scale
        warnings.simplefilter("ignore", UserWarning)
        _, wm_sel = _wm_voxels(fa, wm_fa, wm_min_voxels, wm_max_voxels)
    return float(np.median(s0[wm_sel]))


def estimate_responses(
    data: np.ndarray,
    bvals: np.ndarray,
    directions_world: np.ndarray,
    mask: np.ndarray,
    lmax: int = 8,
    *,
    wm_fa: float = 0.7,
    wm_max_voxels: int = 300,
    wm_min_voxels: int = 30,
    iso_fa: float = 0.2,
    gm_md: float = 1.1e-3,
    csf_md: float = 2.5e-3,
    iso_min_voxels: int = 10,
) -> Responses:
    """Estimate WM (and, for multi-shell data, GM and CSF) responses from the data.

    Parameters
    ----------
    data : ndarray ``(X, Y, Z, G)`` (or ``(N, G)``)
        Raw diffusion signal.
    bvals : ndarray ``(G,)``
    directions_world : ndarray ``(G, 3)``
        Unit gradient directions (any frame; the response is frame-free). Zero for b=0.
    mask : ndarray ``(X, Y, Z)`` bool
        Voxels to select from.
    lmax : int
        Largest degree of the zonal WM response.
    wm_fa, wm_max_voxels, wm_min_voxels
        WM voxels: FA above ``wm_fa``, the ``wm_max_voxels`` highest at most; when fewer
        than ``wm_min_voxels`` pass, the ``wm_min_voxels`` highest-FA voxels (warning).
    iso_fa, gm_md, csf_md, iso_min_voxels
        GM: FA below ``iso_fa`` and MD below ``gm_md`` (mm^2/s); CSF: FA below ``iso_fa``
        and MD above ``csf_md``. When fewer than ``iso_min_voxels`` pass, the lowest-FA
        voxels are ranked by MD instead (warning).

    Returns
    -------
    Responses
        One row per shell of :func:`~shdeconv.io.bvals_shells`.
    """
    data = np.asarray(data)
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    directions = np.asarray(directions_world, dtype=np.float64)
    shells, idx = bvals_shells(bvals)
    s0, fa, md, e1, voxels = _tensor_survey(data, bvals, directions, mask)

    def rows(sel: np.ndarray) -> np.ndarray:
        """Normalised signal ``(len(sel), G)`` of the selected (post-``ok``) voxels."""
        return np.asarray(data[tuple(v[sel] for v in voxels)], dtype=np.float64) / s0[sel, None]

    def shell_means(sel: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Mean normalised signal of each shell over the selected voxels ``(shells,)``, read a
        chunk of voxels at a time (the GM selection can hold most of a brain's voxels)."""
        sums = np.zeros(shells.size)
        for i in range(0, sel.size, chunk):
            r = rows(sel[i:i + chunk])
            sums += np.array([r[:, idx == k].sum() for k in range(shells.size)])
        return sums / (sel.size * np.bincount(idx, minlength=shells.size))

    # --- WM: single-fibre voxels, zonal fit per shell in each voxel's own frame
    order, wm_sel = _wm_voxels(fa, wm_fa, wm_min_voxels, wm_max_voxels)
    n_sel = wm_sel.size
    s_wm = rows(wm_sel)
    n_l = lmax // 2 + 1
    wm = np.zeros((shells.size, n_l))
    for k, b in enumerate(shells):
        vols = np.flatnonzero(idx == k)
        if b <= B0_THRESHOLD:
            wm[k, 0] = SQRT_4PI * s_wm[:, vols].mean()
            continue
        cos = e1[wm_sel] @ directions[vols].T  # (n_sel, G_b)
        a = zonal_design(cos.ravel(), lmax)
        wm[k] = np.linalg.lstsq(a, s_wm[:, vols].ravel(), rcond=None)[0]
    s0_scale = float(np.median(s0[wm_sel]))
    logger.info("WM response from %d voxels (FA %.2f-%.2f), S0 scale %.4g", n_sel, fa[wm_sel].min(),
                fa[wm_sel].max(), s0_scale)

    gm = csf = None
    if np.sum(shells > B0_THRESHOLD) >= 2:
        low = fa < iso_fa
        gm_sel = np.flatnonzero(low & (md < gm_md) & (md > 0))
        csf_sel = np.flatnonzero(low & (md > csf_md))
        if gm_sel.size < iso_min_voxels or csf_sel.size < iso_min_voxels:
            cand = np.flatnonzero(low) if low.sum() >= 2 * iso_min_voxels else order[::-1][: max(2 * iso_min_voxels,
                                                                                                 fa.size // 5)]
            by_md = cand[np.argsort(md[cand], kind="stable")]
            n = max(1, by_md.size // 10)
            if gm_sel.size < iso_min_voxels:
                gm_sel = by_md[by_md.size // 4: by_md.size // 4 + max(n, 1)]
            if csf_sel.size < iso_min_voxels:
                csf_sel = by_md[-n:]
            warnings.warn(f"too few voxels pass the GM/CSF thresholds; using {gm_sel.size} GM and "
                          f"{csf_sel.size} CSF voxels ranked by mean diffusivity", UserWarning, stacklevel=2)
        gm, csf = SQRT_4PI * shell_means(gm_sel), SQRT_4PI * shell_means(csf_sel)
        logger.info("GM response from %d voxels, CSF from %d voxels", gm_sel.size, csf_sel.size)
    return Responses(bvals=shells, wm=wm, gm=gm, csf=csf, s0_scale=s0_scale)
