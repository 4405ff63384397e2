"""Local tractography with DIPY from a ``fodf.nii.gz`` written by shdeconv (or MRtrix3).

The file holds SH in the MRtrix3 world frame. DIPY tracks in voxel index space and reads
directions in the voxel axes, so the fODF is rotated once into the voxel-axes frame
(``rotate_sh(c, R^T)``, the inverse of what the writers did) before DIPY sees it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from .._options import OptionError
from ..io import InputError
from ..io._gradients import voxel_axes_rotation
from ..sphere import lmax_from_ncoeffs, rotate_sh

__all__ = ["fodf_to_voxel_frame", "track", "track_seeds", "tracked_streamlines"]

log = logging.getLogger(__name__)


def fodf_to_voxel_frame(fodf_world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World-frame MRtrix3 SH ``(..., S)`` -> the same basis in the voxel-axes frame."""
    return rotate_sh(fodf_world, voxel_axes_rotation(affine).T)


def _load(fit_dir: Path):
    path = fit_dir / "fodf.nii.gz"
    if not path.exists():
        raise InputError(f"{path}: not found; run `shdeconv fit` (or predict/csd) first")
    try:
        img = nib.load(path)
        fodf = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # nibabel raises several types for corrupt files
        raise InputError(f"{path}: cannot be read as NIfTI ({e})") from e
    if fodf.ndim != 4:
        raise InputError(f"{path}: expected a 4-D SH image, got shape {fodf.shape}")
    try:
        lmax_from_ncoeffs(fodf.shape[-1])
    except ValueError as e:
        raise InputError(f"{path}: {e}") from e
    return img, np.nan_to_num(fodf)


def track_seeds(seed_mask: np.ndarray, affine: np.ndarray, seeds_per_voxel: int, seed: int = 0) -> np.ndarray:
    """World (RAS mm) seed points ``(n_voxels * seeds_per_voxel, 3)``: each voxel's centre for
    one seed per voxel, else exactly ``seeds_per_voxel`` uniform random positions in every voxel."""
    from dipy.tracking import utils

    if seeds_per_voxel < 1:
        raise OptionError(f"--seeds-per-voxel must be >= 1, got {seeds_per_voxel}")
    if seeds_per_voxel == 1:
        return utils.seeds_from_mask(seed_mask, affine, density=(1, 1, 1))
    return utils.random_seeds_from_mask(seed_mask, affine, seeds_count=seeds_per_voxel, seed_count_per_voxel=True,
                                        random_seed=seed)


def min_points(min_length: float, step_size: float) -> int:
    """Points a streamline of fixed steps needs to span ``min_length`` mm: ``n`` points span
    ``(n - 1) * step_size``. DIPY's ``minlen`` counts points."""
    return max(2, math.ceil(min_length / step_size - 1e-9) + 1)


def _check_settings(*, step_size, max_angle, wm_threshold, relative_peak_threshold, min_length, seed=0) -> None:
    """:class:`OptionError` for a tracking setting outside its range (before any file is read)."""
    checks = (("--step-size", step_size, step_size > 0, "must be > 0 mm"),
              ("--max-angle", max_angle, 0 < max_angle <= 90, "must be in (0, 90] degrees"),
              ("--wm-threshold", wm_threshold, wm_threshold >= 0, "must be >= 0"),
              ("relative_peak_threshold", relative_peak_threshold, 0 <= relative_peak_threshold < 1,
               "must be in [0, 1)"),
              ("min_length", min_length, min_length >= 0, "must be >= 0 mm"))
    for name, value, ok, rule in checks:
        if not (np.isfinite(value) and ok):
            raise OptionError(f"{name} {rule}, got {value!r}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise OptionError(f"--seed must be an integer >= 0, got {seed!r}")


def tracked_streamlines(fit_dir, seed_mask: np.ndarray | None = None, *, algorithm: str = "det",
                        seeds_per_voxel: int = 1, step_size: float = 0.5, max_angle: float = 30.0,
                        wm_threshold: float = 0.25, seed: int = 0, relative_peak_threshold: float = 0.1,
                        min_length: float = 10.0):
    """DIPY local tractography on ``fit_dir/fodf.nii.gz``; returns ``(image, streamlines in RAS mm)``.

    The fODF is rotated from the MRtrix3 world frame into the voxel frame; tracking stops where
    its WM fraction :math:`\\sqrt{4\\pi} c_{00}` falls below ``wm_threshold``. Seeds
    (:func:`track_seeds`) are in ``seed_mask`` ``(X, Y, Z)`` bool, by default every voxel whose WM
    fraction exceeds the threshold (an error when there is none). ``step_size`` and
    ``min_length`` are in millimetres.
    """
    from dipy.data import get_sphere
    from dipy.direction import (
        DeterministicMaximumDirectionGetter,
        ProbabilisticDirectionGetter,
    )
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import ThresholdStoppingCriterion
    from dipy.tracking.streamline import Streamlines

    if algorithm not in ("det", "prob"):
        raise OptionError(f"algorithm must be 'det' or 'prob', got {algorithm!r}")
    _check_settings(step_size=step_size, max_angle=max_angle, wm_threshold=wm_threshold,
                    relative_peak_threshold=relative_peak_threshold, min_length=min_length, seed=seed)
    fit_dir = Path(fit_dir)
    img, fodf_world = _load(fit_dir)
    affine = img.affine
    fodf = fodf_to_voxel_frame(fodf_world, affine)
    wm = np.sqrt(4 * np.pi) * fodf[..., 0]
    if seed_mask is None:
        seed_mask = wm > wm_threshold
        if not seed_mask.any():
            raise InputError(f"{fit_dir / 'fodf.nii.gz'}: no voxel has a WM fraction above {wm_threshold}")
    seed_mask = np.asarray(seed_mask, dtype=bool)
    if seed_mask.shape != wm.shape:
        raise InputError(fit_dir / "fodf.nii.gz", f"grid {wm.shape} differs from the seed mask's {seed_mask.shape}")
    if not seed_mask.any():
        return img, Streamlines([])
    getter_cls = DeterministicMaximumDirectionGetter if algorithm == "det" else ProbabilisticDirectionGetter
    getter = getter_cls.from_shcoeff(fodf.astype(np.float64), max_angle=max_angle,
                                     sphere=get_sphere(name="repulsion724"), basis_type="tournier07", legacy=False,
                                     pmf_threshold=relative_peak_threshold)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.allclose(zooms, zooms[0], rtol=1e-3):
        log.warning("anisotropic voxels %s: DIPY steps in voxel units of the first axis", zooms)
    seeds = track_seeds(seed_mask, affine, seeds_per_voxel, seed)
    tracker = LocalTracking(getter, ThresholdStoppingCriterion(wm, wm_threshold), seeds, affine, step_size=step_size,
                            random_seed=seed, minlen=min_points(min_length, step_size), return_all=False)
    return img, Streamlines(tracker)


def track(fit_dir, output, *, algorithm: str = "det", seeds_per_voxel: int = 1, step_size: float = 0.5,
          max_angle: float = 30.0, wm_threshold: float = 0.25, seed: int = 0, relative_peak_threshold: float = 0.1,
          min_length: float = 10.0) -> int:
    """Track from every voxel whose WM fraction exceeds ``wm_threshold``; write ``.trk``/``.tck``.

    The WM fraction is :math:`\\sqrt{4\\pi} c_{00}` of the fODF; tracking stops where it falls
    below the threshold (:func:`tracked_streamlines`). Returns the number of streamlines written.
    """
    from dipy.io.stateful_tractogram import Space, StatefulTractogram
    from dipy.io.streamline import save_tractogram

    fit_dir, output = Path(fit_dir), Path(output)
    if output.suffix not in (".trk", ".tck"):
        raise InputError(f"{output}: the output must end in .trk or .tck")
    if not output.parent.exists():
        raise InputError(f"{output.parent}: output directory does not exist")
    img, streamlines = tracked_streamlines(fit_dir, algorithm=algorithm, seeds_per_voxel=seeds_per_voxel,
                                           step_size=step_size, max_angle=max_angle, wm_threshold=wm_threshold,
                                           seed=seed, relative_peak_threshold=relative_peak_threshold,
                                           min_length=min_length)
    sft = StatefulTractogram(streamlines, img, Space.RASMM)
    tmp = output.with_name(f".{output.stem}.partial{output.suffix}")
    save_tractogram(sft, str(tmp), bbox_valid_check=False)
    tmp.replace(output)
    return len(streamlines)
