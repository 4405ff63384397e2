"""Peak images in MRtrix3 ``sh2peaks`` layout.

A peaks image is 4-D with ``3 P`` volumes: volumes ``3p, 3p+1, 3p+2`` hold the world-frame
(MRtrix3 scanner frame) direction of peak ``p`` multiplied by its amplitude, NaN where a voxel
has fewer peaks (what ``sh2peaks`` writes). This is the layout MRtrix3 (``peaks2amp``,
``fixel`` tools), MRtrix3-aware viewers and scilpy read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ._atomic import atomic_save_nifti

__all__ = ["write_peaks", "read_peaks"]

logger = logging.getLogger(__name__)


def write_peaks(path: str | os.PathLike, dirs: np.ndarray, amps: np.ndarray,
                affine: np.ndarray) -> Path:
    """Write peaks as an MRtrix3 ``sh2peaks``-style image.

    Parameters
    ----------
    path : path-like
        Output ``.nii`` or ``.nii.gz``; written atomically.
    dirs : ndarray, shape ``(X, Y, Z, P, 3)``
        World-frame directions (need not be unit: they are normalised).
    amps : ndarray, shape ``(X, Y, Z, P)``
        Peak amplitudes; a peak with amplitude ``<= 0``, non-finite values or a zero direction
        is missing and written as NaN.
    affine : ndarray, shape ``(4, 4)``

    Returns
    -------
    Path
    """
    dirs = np.asarray(dirs, dtype=np.float64)
    amps = np.asarray(amps, dtype=np.float64)
    if dirs.ndim != 5 or dirs.shape[-1] != 3 or amps.shape != dirs.shape[:-1]:
        raise ValueError(f"dirs must be (X, Y, Z, P, 3) and amps (X, Y, Z, P); got "
                         f"{dirs.shape} and {amps.shape}")
    norm = np.linalg.norm(dirs, axis=-1)
    ok = (amps > 0) & np.isfinite(amps) & (norm > 0) & np.isfinite(norm)
    unit = dirs / np.where(ok, norm, 1.0)[..., None]
    vec = np.where(ok[..., None], unit * np.where(ok, amps, 0.0)[..., None], np.nan)
    data = vec.reshape(*dirs.shape[:3], -1).astype(np.float32)
    out = atomic_save_nifti(data, affine, path)
    logger.debug("wrote %d peaks per voxel to %s", dirs.shape[3], out)
    return out


def read_peaks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``sh2peaks``-style image.

    Returns
    -------
    dirs : ndarray, shape ``(X, Y, Z, P, 3)``
        Unit world-frame directions, zeros for missing peaks.
    amps : ndarray, shape ``(X, Y, Z, P)``
        Amplitudes (vector norms); 0 for missing (NaN or zero) peaks.
    """
    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4 or data.shape[3] % 3:
        raise ValueError(f"{path}: a peaks image needs 3*P volumes in 4-D, got shape {data.shape}")
    vec = data.reshape(*data.shape[:3], -1, 3)
    vec = np.where(np.isfinite(vec).all(axis=-1, keepdims=True), vec, 0.0)
    amps = np.linalg.norm(vec, axis=-1)
    dirs = vec / np.where(amps > 0, amps, 1.0)[..., None]
    return dirs, amps
