r"""Scoring predicted fibre peaks against a phantom's truth.

Per voxel inside the mask, predicted peaks (amplitude > 0) are matched to the true fibres by
the Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the antipodal angle
:math:`\angle(u, v) = \arccos |u \cdot v|`, which pairs ``min(n_pred, n_true)`` of them.

- **angular error**: the angle of every matched pair (all pairs, whatever their angle), mean
  and median over pairs; ``angular_error_tol_mean`` averages only pairs within the tolerance.
- **n-** (missing): true fibres without a match within the tolerance (default 25 degrees);
  **n+** (spurious): predicted peaks without a match within the tolerance; means per voxel.
- **success**: the voxel has n- = n+ = 0, i.e. the right number of peaks and every true fibre
  matched within the tolerance.

These are reported for voxels with 1, 2 and 3 true fibres, for all white-matter voxels
(``"all"``: 1-3 fibres) and, for n+ and success only, for voxels without fibres (``"0"``).

**Crossing angle**: for 2-fibre voxels, success and error in bins of the true crossing angle
(<30, 30-45, 45-60, 60-75, 75-90 degrees).

**Spatial coherence** of the main (largest) peak: over all pairs of 6-neighbour voxels inside
the mask that both hold exactly one true fibre whose true directions agree within 15 degrees
(the same bundle continuing), the mean :math:`|\cos|` between the two voxels' predicted main
peaks (0 when either has none) and its mean angle in degrees; the same numbers for the truth
are the reference (below 1 only through the bundles' own curvature).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..io import InputError

__all__ = ["score", "evaluate_dirs", "format_scores", "CROSSING_BINS"]

logger = logging.getLogger(__name__)

#: crossing-angle bins (degrees) for 2-fibre voxels: label -> [low, high)
CROSSING_BINS = {"<30": (0.0, 30.0), "30-45": (30.0, 45.0), "45-60": (45.0, 60.0),
                 "60-75": (60.0, 75.0), "75-90": (75.0, 90.0001)}
_COHERENCE_SAME_BUNDLE_DEG = 15.0


def _unit(v):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)


def _angle(u, v):
    """Antipodal angle in degrees between unit vectors (broadcast over leading axes)."""
    c = np.abs(np.sum(u * v, axis=-1))
    return np.degrees(np.arccos(np.clip(c, 0.0, 1.0)))


def _stat(x, fn):
    return None if len(x) == 0 else float(fn(x))


def _match(pd, pv, td, tn, tol):
    """Per-voxel Hungarian matching.

    Returns per voxel n- and n+ ``(N,)`` and the matched angles with their voxel indices.
    """
    n = len(tn)
    npred = pv.sum(axis=1)
    n_minus = tn.copy()
    n_plus = npred.copy()
    ang_list, vox_list = [], []
    # one-to-one voxels (the bulk) without the assignment solver
    one = (npred == 1) & (tn == 1)
    if one.any():
        first = np.argmax(pv, axis=1)
        a = _angle(pd[np.arange(n), first], td[:, 0])[one]
        ok = a <= tol
        idx = np.nonzero(one)[0]
        n_minus[idx] -= ok
        n_plus[idx] -= ok
        ang_list.append(a)
        vox_list.append(idx)
    for v in np.nonzero((npred > 0) & (tn > 0) & ~one)[0]:
        p = pd[v][pv[v]]
        t = td[v, : tn[v]]
        cost = _angle(p[:, None, :], t[None, :, :])
        r, c = linear_sum_assignment(cost)
        a = cost[r, c]
        k = int((a <= tol).sum())
        n_minus[v] -= k
        n_plus[v] -= k
        ang_list.append(a)
        vox_list.append(np.full(len(a), v))
    angles = np.concatenate(ang_list) if ang_list else np.zeros(0)
    voxels = np.concatenate(vox_list) if vox_list else np.zeros(0, dtype=np.int64)
    return n_minus, n_plus, angles, voxels


def _group(sel, n_minus, n_plus, angles, ang_vox, tol):
    ids = np.nonzero(sel)[0]
    in_group = np.isin(ang_vox, ids)
    a = angles[in_group]
    succ = (n_minus[ids] == 0) & (n_plus[ids] == 0)
    return {
        "n_voxels": int(ids.size),
        "success_rate": _stat(succ, np.mean),
        "angular_error_mean": _stat(a, np.mean),
        "angular_error_median": _stat(a, np.median),
        "angular_error_tol_mean": _stat(a[a <= tol], np.mean),
        "n_minus": _stat(n_minus[ids], np.mean),
        "n_plus": _stat(n_plus[ids], np.mean),
    }


def _coherence(main_pred, true_dirs, true_n, mask):
    """Main-peak coherence over same-bundle 6-neighbour pairs, see the module docstring."""
    single = mask & (true_n == 1)
    t0 = true_dirs[..., 0, :]
    cos_same = np.cos(np.radians(_COHERENCE_SAME_BUNDLE_DEG))
    cp, ct = [], []
    for ax in range(3):
        if single.shape[ax] < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        ok = single[lo] & single[hi]
        tcos = np.abs(np.sum(t0[lo] * t0[hi], axis=-1))
        ok &= tcos >= cos_same
        ct.append(tcos[ok])
        cp.append(np.abs(np.sum(main_pred[lo] * main_pred[hi], axis=-1))[ok])
    cp = np.concatenate(cp) if cp else np.zeros(0)
    ct = np.concatenate(ct) if ct else np.zeros(0)
    deg = lambda c: np.degrees(np.arccos(np.clip(c, 0.0, 1.0)))  # noqa: E731
    return {
        "n_pairs": int(cp.size),
        "pred_abs_cos": _stat(cp, np.mean),
        "pred_angle_deg": _stat(deg(cp), np.mean),
        "truth_abs_cos": _stat(ct, np.mean),
        "truth_angle_deg": _stat(deg(ct), np.mean),
    }


def score(pred_dirs: np.ndarray, pred_amps: np.ndarray, true_dirs: np.ndarray,
          true_n: np.ndarray, mask: np.ndarray | None = None, *, tolerance_deg: float = 25.0
          ) -> dict:
    """Score predicted peaks against true fibres.

    Parameters
    ----------
    pred_dirs : ndarray, shape ``(X, Y, Z, P, 3)``
        Predicted peak directions (any length; normalised here), same frame as the truth.
    pred_amps : ndarray, shape ``(X, Y, Z, P)``
        Peak amplitudes; a peak counts when its amplitude is finite and > 0.
    true_dirs : ndarray, shape ``(X, Y, Z, T, 3)``
        True fibre directions; the first ``true_n`` of each voxel are used.
    true_n : ndarray of int, shape ``(X, Y, Z)``
    mask : ndarray of bool, shape ``(X, Y, Z)``, optional
        Voxels to score; default all.
    tolerance_deg : float
        Angular tolerance of a successful match.

    Returns
    -------
    dict
        ``{"tolerance_deg", "groups": {"all", "0", "1", "2", "3": {n_voxels, success_rate,
        angular_error_mean, angular_error_median, angular_error_tol_mean, n_minus, n_plus}},
        "crossing": {bin label: {n_voxels, success_rate, angular_error_mean}},
        "coherence": {n_pairs, pred_abs_cos, pred_angle_deg, truth_abs_cos,
        truth_angle_deg}}``; undefined statistics (empty groups) are ``None``.
    """
    pred_dirs = np.asarray(pred_dirs, dtype=np.float64)
    pred_amps = np.asarray(pred_amps, dtype=np.float64)
    true_dirs = np.asarray(true_dirs, dtype=np.float64)
    true_n = np.asarray(true_n).astype(np.int64)
    spatial = true_n.shape
    if (pred_dirs.shape[:-2] != spatial or pred_amps.shape != pred_dirs.shape[:-1]
            or true_dirs.shape[:-2] != spatial or pred_dirs.shape[-1] != 3
            or true_dirs.shape[-1] != 3):
        raise ValueError(
            f"shape mismatch: pred_dirs {pred_dirs.shape} (expected {spatial} + (P, 3)), "
            f"pred_amps {pred_amps.shape}, true_dirs {true_dirs.shape} (expected {spatial} + "
            f"(T, 3)), true_n {true_n.shape}")
    if np.any(true_n > true_dirs.shape[-2]) or np.any(true_n < 0):
        raise ValueError(f"true_n must be in [0, {true_dirs.shape[-2]}]")
    mask = np.ones(spatial, bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != spatial:
        raise ValueError(f"mask shape {mask.shape} does not match {spatial}")
    tol = float(tolerance_deg)

    valid = np.isfinite(pred_amps) & (pred_amps > 0) & (np.linalg.norm(pred_dirs, axis=-1) > 0)
    amps = np.where(valid, pred_amps, -np.inf)
    order = np.argsort(-amps, axis=-1)
    pd = _unit(np.take_along_axis(pred_dirs, order[..., None], axis=-2))
    pv = np.take_along_axis(valid, order, axis=-1)
    main_pred = np.where(pv[..., :1], pd[..., 0, :], 0.0)
    td = _unit(true_dirs)

    m = mask.reshape(-1)
    flat_pd = pd.reshape(-1, *pd.shape[-2:])[m]
    flat_pv = pv.reshape(-1, pv.shape[-1])[m]
    flat_td = td.reshape(-1, *td.shape[-2:])[m]
    flat_tn = true_n.reshape(-1)[m]
    n_minus, n_plus, angles, ang_vox = _match(flat_pd, flat_pv, flat_td, flat_tn, tol)

    groups = {"all": _group(flat_tn > 0, n_minus, n_plus, angles, ang_vox, tol)}
    for k in range(4):
        groups[str(k)] = _group(flat_tn == k, n_minus, n_plus, angles, ang_vox, tol)

    crossing = {}
    two = flat_tn == 2
    xang = _angle(flat_td[:, 0], flat_td[:, 1])
    for label, (lo, hi) in CROSSING_BINS.items():
        sel = two & (xang >= lo) & (xang < hi)
        g = _group(sel, n_minus, n_plus, angles, ang_vox, tol)
        crossing[label] = {k: g[k] for k in ("n_voxels", "success_rate", "angular_error_mean")}

    out = {"tolerance_deg": tol, "groups": groups, "crossing": crossing,
           "coherence": _coherence(main_pred, td, true_n, mask)}
    logger.debug("scored %d voxels: success %s", int(m.sum()), groups["all"]["success_rate"])
    return out


def evaluate_dirs(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, *,
                  tolerance_deg: float = 25.0, region: np.ndarray | None = None, **peak_kwargs) -> dict:
    """Score a method's output directory against a phantom written by ``write_phantom``.

    Parameters
    ----------
    pred_dir : path-like
        Holds ``fodf.nii.gz`` (MRtrix3-basis SH in the world frame; preferred, peaks found with
        :func:`~shdeconv.direction.sh_peaks`) or ``peaks.nii.gz`` (``sh2peaks`` layout).
    truth_dir : path-like
        The phantom directory or its ``truth/`` subdirectory.
    tolerance_deg : float
        Success tolerance.
    region : ndarray of bool, shape ``(X, Y, Z)``, optional
        Score only these voxels of the truth's mask (peaks are extracted there only).
    **peak_kwargs
        Passed to :func:`~shdeconv.direction.sh_peaks` (thresholds).

    Returns
    -------
    dict
        :func:`score`'s dictionary plus ``source`` (``"fodf"`` or ``"peaks"``), ``pred_path``
        and ``truth`` (the phantom's ``truth.json``); with ``region``, also ``region_voxels``
        (the voxels scored).
    """
    import nibabel as nib

    from ..direction import sh_peaks
    from ..io._peaks_file import read_peaks
    from ..sim._io import load_truth

    truth = load_truth(truth_dir)
    mask = truth.mask if region is None else region & truth.mask
    pred_dir = Path(pred_dir)
    fodf, peaks = pred_dir / "fodf.nii.gz", pred_dir / "peaks.nii.gz"
    if fodf.exists():
        img = nib.load(str(fodf))
        sh = np.asarray(img.dataobj, dtype=np.float64)
        if sh.shape[:3] != truth.n_fibres.shape:
            raise InputError(f"{fodf}: spatial shape {sh.shape[:3]} differs from the truth's "
                             f"{truth.n_fibres.shape}")
        dirs, amps = sh_peaks(sh, mask=mask, **peak_kwargs)
        source, path, affine = "fodf", fodf, img.affine
    elif peaks.exists():
        if peak_kwargs:
            raise TypeError(f"peak extraction options {sorted(peak_kwargs)} need fodf.nii.gz, "
                            f"but {pred_dir} only has peaks.nii.gz")
        dirs, amps = read_peaks(peaks)
        source, path, affine = "peaks", peaks, nib.load(str(peaks)).affine
        if dirs.shape[:3] != truth.n_fibres.shape:
            raise InputError(f"{peaks}: spatial shape {dirs.shape[:3]} differs from the truth's "
                             f"{truth.n_fibres.shape}")
    else:
        raise InputError(pred_dir, "holds neither fodf.nii.gz nor peaks.nii.gz")
    if not np.allclose(affine, truth.affine, atol=1e-3):
        warnings.warn(f"{path}: affine differs from the truth's; directions are compared in the "
                      f"world frame as stored", stacklevel=2)
    out = score(dirs, amps, truth.peak_dirs, truth.n_fibres, mask,
                tolerance_deg=tolerance_deg)
    out.update(source=source, pred_path=str(path), truth=truth.meta)
    if region is not None:
        out["region_voxels"] = int(mask.sum())
    return out


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def format_scores(scores: dict, name: str = "method") -> str:
    """Markdown tables of a :func:`score` / :func:`evaluate_dirs` result.

    Parameters
    ----------
    scores : dict
    name : str
        Heading (the method's name).

    Returns
    -------
    str
    """
    tol = scores.get("tolerance_deg", 25.0)
    lines = [f"### {name}", "",
             f"| voxels | n | success (<{tol:g}°) | AE mean (°) | AE median (°) | n- | n+ |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    labels = {"1": "1 fibre", "2": "2 fibres", "3": "3 fibres", "all": "WM (1-3)",
              "0": "no fibre"}
    for key in ("1", "2", "3", "all", "0"):
        g = scores["groups"][key]
        lines.append(f"| {labels[key]} | {g['n_voxels']} | {_fmt(g['success_rate'])} | "
                     f"{_fmt(g['angular_error_mean'], '.2f')} | "
                     f"{_fmt(g['angular_error_median'], '.2f')} | {_fmt(g['n_minus'])} | "
                     f"{_fmt(g['n_plus'])} |")
    cr = scores["crossing"]
    lines += ["", "| 2-fibre crossing angle | " + " | ".join(f"{k}°" for k in cr) + " |",
              "|---|" + "---:|" * len(cr),
              "| voxels | " + " | ".join(str(v["n_voxels"]) for v in cr.values()) + " |",
              "| success | " + " | ".join(_fmt(v["success_rate"]) for v in cr.values()) + " |",
              "| AE mean (°) | " + " | ".join(_fmt(v["angular_error_mean"], ".2f")
                                          for v in cr.values()) + " |"]
    c = scores["coherence"]
    lines += ["", f"Main-peak coherence over {c['n_pairs']} same-bundle neighbour pairs: "
              f"mean |cos| {_fmt(c['pred_abs_cos'])} (truth {_fmt(c['truth_abs_cos'])}), "
              f"mean angle {_fmt(c['pred_angle_deg'], '.2f')}° "
              f"(truth {_fmt(c['truth_angle_deg'], '.2f')}°)."]
    return "\n".join(lines) + "\n"


def crossing_error(scores: dict) -> float | None:
    """Mean angular error over all matched peaks of 2- and 3-fibre voxels (voxel-weighted)."""
    num = den = 0.0
    for key in ("2", "3"):
        g = scores["groups"][key]
        if g["n_voxels"] and g["angular_error_mean"] is not None:
            num += g["angular_error_mean"] * g["n_voxels"]
            den += g["n_voxels"]
    return num / den if den else None


def format_comparison(rows) -> str:
    """One Markdown table comparing methods.

    ``rows``: iterable of ``(name, seconds, scores)`` with ``scores`` from :func:`score` or
    :func:`evaluate_dirs`. Columns: success rate per fibre count, mean angular error of
    single-fibre and of crossing (2-3 fibre) voxels, missing/spurious peaks per WM voxel,
    and main-peak coherence.
    """
    lines = ["| method | seconds | success 1 | success 2 | success 3 | success all | AE 1-fibre (°) "
             "| AE crossings (°) | n- | n+ | coherence |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, seconds, s in rows:
        g = s["groups"]
        lines.append(
            f"| {name} | {seconds:.1f} | {_fmt(g['1']['success_rate'])} | {_fmt(g['2']['success_rate'])} | "
            f"{_fmt(g['3']['success_rate'])} | {_fmt(g['all']['success_rate'])} | "
            f"{_fmt(g['1']['angular_error_mean'], '.2f')} | {_fmt(crossing_error(s), '.2f')} | "
            f"{_fmt(g['all']['n_minus'])} | {_fmt(g['all']['n_plus'])} | {_fmt(s['coherence']['pred_abs_cos'])} |")
    return "\n".join(lines) + "\n"
