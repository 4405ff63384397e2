"""Writing phantoms to disk (dwi, FSL gradients, mask, truth) and reading the truth back.

Layout of ``outdir``::

    dwi.nii.gz  bvals  bvecs  mask.nii.gz
    truth/peaks.nii.gz      MRtrix3 sh2peaks layout: world-frame unit direction x fraction
    truth/fractions.nii.gz  (X, Y, Z, 3) fibre volume fractions
    truth/nfib.nii.gz       (X, Y, Z) number of fibres
    truth/gm.nii.gz  truth/csf.nii.gz  truth/wm.nii.gz  truth/mask.nii.gz
    truth/truth.json        kind, scheme, snr, seed, shape, generator version, ...
    truth/bundles.nii.gz      (X, Y, Z, B) uint8 volume of every bundle (spatial phantom only)
    truth/bundle_ends.nii.gz  (X, Y, Z, B) int8 end regions: 0 none, 1 first end, 2 second end

The bundles' names are in ``truth.json`` (``bundle_names``). Folders written before the bundle
files existed still load, without bundles.

``bvecs`` follow the FSL convention (voxel axes, x flipped for a positive-determinant
affine), produced by :func:`shdeconv.io.world_to_fsl_bvecs`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from ..io import InputError
from ..io._atomic import atomic_save_nifti, atomic_write_text
from ..io._gradients import world_to_fsl_bvecs
from ..io._peaks_file import read_peaks, write_peaks
from ._phantom import SIZES, Phantom, spatial_phantom, voxelwise_phantom
from ._variation import PhantomVariation

__all__ = ["PHANTOM_FILES", "Truth", "load_truth", "simulate_to_dir", "truth_fodf_sh", "write_phantom"]

#: What :func:`write_phantom` puts in its directory (``truth`` is a folder).
PHANTOM_FILES = ("dwi.nii.gz", "bvals", "bvecs", "mask.nii.gz", "truth")

#: Heat-kernel apodisation of the ground-truth fODF: order l is weighted by
#: ``exp(-TRUTH_SMOOTHING l (l + 1))`` (0.5 at l = 8), which tames the ringing of truncated deltas.
TRUTH_SMOOTHING = 0.0096

logger = logging.getLogger(__name__)


@dataclass
class Truth:
    """Ground truth read from a ``truth/`` directory (arrays as in :class:`Phantom`)."""

    peak_dirs: np.ndarray  # (X, Y, Z, 3, 3) world-frame unit vectors
    peak_fractions: np.ndarray  # (X, Y, Z, 3)
    n_fibres: np.ndarray  # (X, Y, Z) int
    gm: np.ndarray
    csf: np.ndarray
    wm: np.ndarray
    mask: np.ndarray  # (X, Y, Z) bool
    affine: np.ndarray  # (4, 4)
    meta: dict = field(default_factory=dict)
    bundle_masks: np.ndarray | None = None  # (X, Y, Z, B) bool, None without bundle files
    bundle_ends: np.ndarray | None = None  # (X, Y, Z, B) int8: 0 none, 1 first end, 2 second end
    bundle_names: tuple[str, ...] = ()


def truth_fodf_sh(peak_dirs: np.ndarray, fractions: np.ndarray, lmax: int = 8, *,
                  rotation: np.ndarray | None = None, smoothing: float = TRUTH_SMOOTHING) -> np.ndarray:
    r"""Ground-truth fODF SH (MRtrix3 basis): apodised deltas weighted by the fibre fractions.

    :math:`t_{lm}(x) = e^{-\kappa l (l+1)} \sum_i f_i(x) Y_{lm}(u_i(x))`. With responses scaled
    as the forward model's, a pure single-fibre voxel's fODF has :math:`t_{00} = Y_{00}`.

    Parameters
    ----------
    peak_dirs : ndarray ``(..., P, 3)`` (world frame); fractions : ndarray ``(..., P)``
    rotation : ndarray ``(3, 3)``, optional
        Express the result in the frame ``u' = R^T u`` (e.g. the voxel axes of
        :func:`~shdeconv.io.voxel_axes_rotation`).

    Returns
    -------
    ndarray ``(..., n_coeffs(lmax))``
    """
    from ..sphere import sh_degrees, sh_matrix

    d = np.asarray(peak_dirs, dtype=np.float64)
    if rotation is not None:
        d = d @ np.asarray(rotation, dtype=np.float64)
    f = np.asarray(fractions, dtype=np.float64)
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    safe = np.where(norm > 0, d / np.where(norm > 0, norm, 1.0), [0.0, 0.0, 1.0])
    y = sh_matrix(safe.reshape(-1, 3), lmax).reshape(d.shape[:-1] + (-1,))
    l = sh_degrees(lmax)
    return np.einsum("...p,...ps->...s", f * (norm[..., 0] > 0), y) * np.exp(-smoothing * l * (l + 1))


def _save(data: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    atomic_save_nifti(np.asarray(data).astype(dtype), affine, path)


def write_phantom(phantom: Phantom, outdir: str | os.PathLike) -> Path:
    """Write a phantom (acquisition and truth) to ``outdir``; returns ``outdir``.

    Parameters
    ----------
    phantom : Phantom
    outdir : path-like
        Created if needed; existing files of the layout are replaced.
    """
    out = Path(outdir)
    truth = out / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    aff = phantom.affine
    _save(phantom.dwi, aff, out / "dwi.nii.gz", np.float32)
    _save(phantom.mask, aff, out / "mask.nii.gz", np.uint8)
    bvecs = world_to_fsl_bvecs(phantom.directions_world, aff)
    atomic_write_text(out / "bvals", " ".join(f"{b:g}" for b in phantom.bvals) + "\n")
    atomic_write_text(out / "bvecs", "\n".join(" ".join(f"{v:.8f}" for v in row) for row in bvecs.T)
                + "\n")
    write_peaks(truth / "peaks.nii.gz", phantom.peak_dirs, phantom.peak_fractions, aff)
    _save(phantom.peak_fractions, aff, truth / "fractions.nii.gz", np.float32)
    _save(phantom.n_fibres, aff, truth / "nfib.nii.gz", np.int16)
    for name in ("gm", "csf", "wm"):
        _save(getattr(phantom, name), aff, truth / f"{name}.nii.gz", np.float32)
    _save(phantom.mask, aff, truth / "mask.nii.gz", np.uint8)
    meta = dict(phantom.meta)
    if phantom.bundle_masks is not None:
        _save(phantom.bundle_masks, aff, truth / "bundles.nii.gz", np.uint8)
        _save(phantom.bundle_ends, aff, truth / "bundle_ends.nii.gz", np.int8)
        meta["bundle_names"] = list(phantom.bundle_names)
    atomic_write_text(truth / "truth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    logger.info("wrote phantom to %s", out)
    return out


def load_truth(truth_dir: str | os.PathLike) -> Truth:
    """Read the truth written by :func:`write_phantom`.

    Parameters
    ----------
    truth_dir : path-like
        The ``truth/`` directory or the phantom directory that contains it.
    """
    d = Path(truth_dir)
    if not (d / "truth.json").exists() and (d / "truth" / "truth.json").exists():
        d = d / "truth"
    if not (d / "truth.json").exists():
        raise InputError(truth_dir, f"no truth.json here or in {Path(truth_dir) / 'truth'}")
    meta = json.loads((d / "truth.json").read_text())
    img = nib.load(str(d / "nfib.nii.gz"))
    n_fib = np.asarray(img.dataobj).astype(np.int64)
    dirs, _ = read_peaks(d / "peaks.nii.gz")
    fr = np.asarray(nib.load(str(d / "fractions.nii.gz")).dataobj, dtype=np.float64)

    def vol(name):
        return np.asarray(nib.load(str(d / f"{name}.nii.gz")).dataobj, dtype=np.float64)

    mask_path = d / "mask.nii.gz" if (d / "mask.nii.gz").exists() else d.parent / "mask.nii.gz"
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    bundles = ends = None
    names: tuple[str, ...] = ()
    if (d / "bundles.nii.gz").exists() and (d / "bundle_ends.nii.gz").exists():
        bundles = np.asarray(nib.load(str(d / "bundles.nii.gz")).dataobj) > 0
        ends = np.asarray(nib.load(str(d / "bundle_ends.nii.gz")).dataobj).astype(np.int8)
        if bundles.ndim == 3:  # a single bundle may be stored as a 3-D image
            bundles, ends = bundles[..., None], ends[..., None]
        names = tuple(meta.get("bundle_names") or (f"bundle{i + 1}" for i in range(bundles.shape[-1])))
        if bundles.shape != mask.shape + (len(names),) or ends.shape != bundles.shape:
            raise InputError(d / "bundles.nii.gz", f"bundle images {bundles.shape} and {ends.shape} do not "
                             f"match the mask {mask.shape} and the {len(names)} bundle names")
    return Truth(peak_dirs=dirs, peak_fractions=fr, n_fibres=n_fib, gm=vol("gm"),
                 csf=vol("csf"), wm=vol("wm"), mask=mask, affine=img.affine, meta=meta,
                 bundle_masks=bundles, bundle_ends=ends, bundle_names=names)


def simulate_to_dir(outdir: str | os.PathLike, kind: str = "spatial", scheme: str = "clinical",
                    snr: float | None = 20.0, seed: int = 0, size: str = "default",
                    variation: PhantomVariation | None = None) -> Path:
    """Simulate a phantom and write it to ``outdir`` (the CLI's ``shdeconv simulate``).

    Parameters
    ----------
    outdir : path-like
    kind : {"spatial", "voxelwise"}
    scheme : str
        Acquisition scheme name (``multishell``/``hcp``, ``clinical``, ``sparse``).
    snr : float or None
        b=0 SNR of pure white matter; ``None`` for noise-free.
    seed : int
    size : {"default", "quick"}
    variation : PhantomVariation, optional
        Departures from the clean phantom (dispersion, diffusivity jitter, correlated noise,
        bias field); recorded in ``truth/truth.json``.

    Returns
    -------
    Path
        ``outdir``.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if kind == "spatial":
        ph = spatial_phantom(scheme=scheme, snr=snr, seed=seed, size=size, variation=variation)
    elif kind == "voxelwise":
        ph = voxelwise_phantom(scheme=scheme, snr=snr, seed=seed, size=size, variation=variation)
    else:
        raise ValueError(f"kind must be 'spatial' or 'voxelwise', got {kind!r}")
    return write_phantom(ph, outdir)
