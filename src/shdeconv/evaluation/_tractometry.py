r"""Tractography-level scoring on phantoms with known bundles, in the manner of Tractometer.

Tractometer (Côté et al., 2013, "Tractometer: towards validation of tractography pipelines",
Medical Image Analysis 17(7)) judges a tractogram by the connections its streamlines make
between regions where known bundles end, rather than by local fibre directions. This module
applies the same idea to the bundles of shdeconv's spatial phantom
(:func:`~shdeconv.sim.spatial_phantom`): every bundle ``b`` has a volume ``V_b`` and two end
regions ``E1_b`` and ``E2_b`` (``truth/bundles.nii.gz`` and ``truth/bundle_ends.nii.gz``).

Coordinates
-----------
Streamlines are given in **voxel index coordinates** of the truth's grid: a point ``(i, j, k)``
is at world position ``affine @ (i, j, k, 1)``, integer values are voxel centres, and a point
lies in voxel ``round(i), round(j), round(k)``. This is DIPY's ``Space.VOX`` with the NIfTI
(centre) origin; :func:`rasmm_to_voxel` converts streamlines in RAS millimetres with the affine,
and a loaded ``StatefulTractogram`` gives them with ``sft.to_vox(); sft.to_center()``. Points
outside the grid lie in no voxel.

Rules
-----
Volumes and end regions are dilated by ``dilation`` voxels (26-neighbourhood), because a
streamline tracked from the fODF runs on into the partial-volume fringe of a bundle before it
stops. With ``D(.)`` this dilation:

- the **ends** of a streamline are its first and last points; an end *touches* region ``E`` if
  its voxel lies in ``D(E)``;
- a streamline **connects** bundle ``b`` if one end touches ``E1_b`` and the other ``E2_b``;
- it is **valid** for ``b`` if it connects ``b`` and at least ``min_inside`` (0.9) of its points
  lie in ``D(V_b)``; when several bundles qualify (overlapping volumes), the one holding most of
  its points is taken;
- it is **invalid** if both of its ends touch some end region but it is valid for no bundle:
  its ends are those of two different bundles, or both at the same end of a bundle, or it
  connects the ends of a bundle while leaving that bundle's volume on the way;
- otherwise (at least one end touches no end region: it stops early or runs out of the
  bundles) it makes **no connection**.

The fractions of valid, invalid and no-connection streamlines are of all streamlines scored.
Per bundle, with ``T_b`` the voxels visited (holding a point) by the valid streamlines of ``b``:

- **overlap** ``|T_b ∩ V_b| / |V_b|``: how much of the bundle's volume they cover;
- **overreach** ``|T_b \ V_b| / |V_b|``: how far they spread out of it (the undilated volume, so
  a streamline running in the fringe counts here even though it was valid).

Means over bundles count every bundle, those without any valid streamline (overlap 0 and
overreach 0) included; ``valid_bundles`` is the number of bundles reached by at least one valid
streamline.

Tracking for the score
----------------------
:func:`track_and_score` tracks a method's ``fodf.nii.gz`` with the settings of
:func:`shdeconv.tracking.track` (DIPY ``LocalTracking``, deterministic or probabilistic
direction getter on the fODF rotated from the MRtrix3 world frame into the voxel frame, threshold
stopping on the method's own white-matter fraction :math:`\sqrt{4\pi} c_{00}`), except for the
seeds: they are placed in the truth's white-matter mask (true WM fraction above the threshold,
optionally a fixed random subset of its voxels, :func:`seed_voxels`), so every method is
tracked from identical seeds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..io import InputError

__all__ = ["rasmm_to_voxel", "score_tractogram", "seed_voxels", "track_and_score", "track_from_mask"]

logger = logging.getLogger(__name__)

#: default share of a valid streamline's points that must lie in its bundle's dilated volume
MIN_INSIDE = 0.9


def rasmm_to_voxel(streamlines, affine: np.ndarray) -> list[np.ndarray]:
    """Streamlines in RAS millimetres -> voxel index coordinates of the grid of ``affine``.

    Parameters
    ----------
    streamlines : iterable of ndarray ``(n, 3)``
        World (RAS mm) points.
    affine : ndarray ``(4, 4)``
        Voxel-to-world affine of the grid (integer indices at voxel centres).

    Returns
    -------
    list of ndarray ``(n, 3)``, float64
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return [np.asarray(s, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3] for s in streamlines]


def _bundle_truth(truth):
    """``(masks (X, Y, Z, B) bool, ends (X, Y, Z, B) int8, names)`` of a Truth, Phantom or folder."""
    if isinstance(truth, (str, os.PathLike)):
        from ..sim import load_truth

        where = truth
        truth = load_truth(truth)
    else:
        where = "truth"
    if getattr(truth, "bundle_masks", None) is None or truth.bundle_masks.shape[-1] == 0:
        raise InputError(where, "has no bundles (truth/bundles.nii.gz): only spatial phantoms written by this "
                                "version of shdeconv have them")
    masks = np.asarray(truth.bundle_masks, dtype=bool)
    ends = np.asarray(truth.bundle_ends, dtype=np.int8)
    names = tuple(truth.bundle_names) or tuple(f"bundle{i + 1}" for i in range(masks.shape[-1]))
    return masks, ends, names


def _dilate(a: np.ndarray, n: int) -> np.ndarray:
    """26-neighbourhood dilation of every 3-D volume of ``a`` ``(X, Y, Z, B)`` by ``n`` voxels."""
    from scipy import ndimage

    if n <= 0:
        return a.copy()
    st = np.zeros((3, 3, 3, 3), dtype=bool)
    st[..., 1] = True
    return ndimage.binary_dilation(a, structure=st, iterations=int(n))


def score_tractogram(streamlines_vox, truth, *, min_inside: float = MIN_INSIDE, dilation: int = 1) -> dict:
    """Tractometer-style scores of streamlines against a phantom's bundles (rules: module docstring).

    Parameters
    ----------
    streamlines_vox : iterable of ndarray ``(n, 3)``
        Streamlines in voxel index coordinates of the truth's grid (integers at voxel centres);
        empty ones are ignored.
    truth : Truth, Phantom or path-like
        Anything with ``bundle_masks``, ``bundle_ends`` and ``bundle_names``
        (:func:`~shdeconv.sim.load_truth`, :func:`~shdeconv.sim.spatial_phantom`), or a phantom
        folder.
    min_inside : float
        Share of a valid streamline's points that must lie in its bundle's dilated volume.
    dilation : int
        Voxels by which volumes and end regions are dilated.

    Returns
    -------
    dict
        ``n_streamlines``; counts ``valid``, ``invalid``, ``no_connection`` and their fractions of
        all streamlines ``valid_fraction``, ``invalid_fraction``, ``no_connection_fraction``
        (None without streamlines); ``n_bundles``, ``valid_bundles``, ``mean_overlap``,
        ``mean_overreach``; ``bundles``: name -> ``{"voxels", "valid", "overlap",
        "overreach"}``; ``rules``: ``min_inside`` and ``dilation``.
    """
    masks, ends, names = _bundle_truth(truth)
    if not 0.0 <= min_inside <= 1.0:
        raise ValueError(f"min_inside must be in [0, 1], got {min_inside}")
    shape, nb = masks.shape[:3], masks.shape[-1]
    vol_d = _dilate(masks, dilation)
    end1 = _dilate(ends == 1, dilation)
    end2 = _dilate(ends == 2, dilation)

    sl = [np.asarray(s, dtype=np.float64).reshape(-1, 3) for s in streamlines_vox]
    sl = [s for s in sl if len(s)]
    n = len(sl)
    lengths = np.array([len(s) for s in sl], dtype=np.int64)
    pts = np.concatenate(sl) if n else np.zeros((0, 3))
    vox = np.rint(pts).astype(np.int64)
    ok = np.all((vox >= 0) & (vox < np.asarray(shape)), axis=1)
    flat = np.full(len(vox), -1, dtype=np.int64)
    flat[ok] = np.ravel_multi_index(tuple(vox[ok].T), shape)

    def lookup(arr, idx):  # (len(idx), B) bool; False outside the grid
        out = np.zeros((len(idx), nb), dtype=bool)
        good = idx >= 0
        out[good] = arr.reshape(-1, nb)[idx[good]]
        return out

    starts = np.r_[0, np.cumsum(lengths)[:-1]] if n else np.zeros(0, dtype=np.int64)
    first, last = flat[starts], flat[starts + lengths - 1]
    a1, a2, b1, b2 = lookup(end1, first), lookup(end2, first), lookup(end1, last), lookup(end2, last)
    connects = (a1 & b2) | (a2 & b1)  # (S, B)
    inside = np.add.reduceat(lookup(vol_d, flat).astype(np.int64), starts, axis=0) if n else np.zeros((0, nb))
    share = inside / np.maximum(lengths, 1)[:, None]
    qualifies = connects & (share >= min_inside)
    valid = qualifies.any(axis=1)
    owner = np.where(valid, np.argmax(np.where(qualifies, share, -1.0), axis=1), -1)
    touches = (a1 | a2).any(axis=1) & (b1 | b2).any(axis=1)
    invalid = touches & ~valid
    no_conn = ~touches

    sid = np.repeat(np.arange(n), lengths)
    bundles = {}
    overlaps, overreaches = [], []
    for b, name in enumerate(names):
        size = int(masks[..., b].sum())
        visited = np.unique(flat[(owner[sid] == b) & (flat >= 0)]) if n else np.zeros(0, dtype=np.int64)
        in_vol = masks[..., b].reshape(-1)[visited]
        overlap = float(in_vol.sum()) / size if size else 0.0
        overreach = float((~in_vol).sum()) / size if size else 0.0
        overlaps.append(overlap)
        overreaches.append(overreach)
        bundles[name] = {"voxels": size, "valid": int((owner == b).sum()), "overlap": overlap,
                         "overreach": overreach}

    def frac(k):
        return float(k) / n if n else None

    counts = {"valid": int(valid.sum()), "invalid": int(invalid.sum()), "no_connection": int(no_conn.sum())}
    return {"n_streamlines": n, **counts,
            **{f"{k}_fraction": frac(v) for k, v in counts.items()},
            "n_bundles": nb, "valid_bundles": int(sum(v["valid"] > 0 for v in bundles.values())),
            "mean_overlap": float(np.mean(overlaps)) if nb else None,
            "mean_overreach": float(np.mean(overreaches)) if nb else None,
            "bundles": bundles, "rules": {"min_inside": float(min_inside), "dilation": int(dilation)}}


def track_from_mask(fit_dir, seed_mask: np.ndarray, *, algorithm: str = "det", seeds_per_voxel: int = 1,
                    step_size: float = 0.5, max_angle: float = 30.0, wm_threshold: float = 0.25, seed: int = 0,
                    relative_peak_threshold: float = 0.1, min_length: float = 10.0) -> list[np.ndarray]:
    """Track ``fit_dir/fodf.nii.gz`` from the seeds of a given mask; streamlines in voxel coordinates.

    Everything but the seed mask is as in :func:`shdeconv.tracking.track`: the fODF is rotated
    from the MRtrix3 world frame into the voxel frame, tracking stops where the fODF's own WM
    fraction :math:`\\sqrt{4\\pi} c_{00}` falls below ``wm_threshold``, ``step_size`` and
    ``min_length`` are in millimetres.

    Parameters
    ----------
    fit_dir : path-like
        Folder with ``fodf.nii.gz`` (SH, MRtrix3 basis, world frame).
    seed_mask : ndarray ``(X, Y, Z)`` bool
        Where to seed, on the fODF's grid.
    algorithm, seeds_per_voxel, step_size, max_angle, wm_threshold, seed, relative_peak_threshold, min_length
        As in :func:`~shdeconv.tracking.track`.

    Returns
    -------
    list of ndarray ``(n, 3)``
        Streamlines in voxel index coordinates (see the module docstring).
    """
    from ..tracking import tracked_streamlines

    img, streamlines = tracked_streamlines(fit_dir, seed_mask, algorithm=algorithm, seeds_per_voxel=seeds_per_voxel,
                                           step_size=step_size, max_angle=max_angle, wm_threshold=wm_threshold,
                                           seed=seed, relative_peak_threshold=relative_peak_threshold,
                                           min_length=min_length)
    return rasmm_to_voxel(streamlines, img.affine)


def seed_voxels(truth, wm_threshold: float = 0.25, max_voxels: int | None = None, seed: int = 0) -> np.ndarray:
    """The seed mask ``(X, Y, Z)`` bool shared by every method: the truth's white matter.

    Voxels of the truth's mask whose true WM fraction exceeds ``wm_threshold``; with
    ``max_voxels``, a random subset of that many of them (drawn from ``seed``, so the same for
    every method scored against this truth).
    """
    mask = np.asarray(truth.mask, dtype=bool) & (np.asarray(truth.wm) > wm_threshold)
    idx = np.flatnonzero(mask)
    if max_voxels is not None and idx.size > max_voxels:
        keep = np.random.default_rng([int(seed), 41]).choice(idx, int(max_voxels), replace=False)
        mask = np.zeros(mask.shape, dtype=bool)
        mask.reshape(-1)[keep] = True
    return mask


def track_and_score(fit_dir, truth_dir, *, seeds_per_voxel: int = 1, seed: int = 0, algorithm: str = "det",
                    step_size: float = 0.5, max_angle: float = 30.0, wm_threshold: float = 0.25,
                    max_seed_voxels: int | None = None, min_inside: float = MIN_INSIDE, dilation: int = 1) -> dict:
    """Track a method's fODF from seeds in the truth's white matter and score the streamlines.

    Parameters
    ----------
    fit_dir : path-like
        Folder with the method's ``fodf.nii.gz`` (the phantom's grid).
    truth_dir : path-like
        The phantom folder or its ``truth/`` folder, with bundle files.
    seeds_per_voxel : int
        Seeds per voxel of the truth's WM mask (:func:`seed_voxels`: voxels whose true WM
        fraction exceeds ``wm_threshold``); 1 seeds at the voxel centres, more at random
        positions drawn from ``seed``.
    seed : int
        Seed of the seed voxels' subset, the seed positions and probabilistic tracking.
    algorithm, step_size, max_angle, wm_threshold
        As in :func:`~shdeconv.tracking.track` (``step_size`` in mm, ``max_angle`` in degrees).
    max_seed_voxels : int, optional
        Seed in a random subset of this many voxels of the WM mask (the same for every method).
    min_inside, dilation
        As in :func:`score_tractogram`.

    Returns
    -------
    dict
        :func:`score_tractogram`'s dict, plus ``seeds`` (number of seed points), ``seed_voxels``,
        ``seconds`` (tracking and scoring) and ``tracking`` (the settings).
    """
    import time

    import nibabel as nib

    from ..sim import load_truth

    t0 = time.perf_counter()
    truth = load_truth(truth_dir)
    _bundle_truth(truth)  # fail before tracking when there are no bundles
    seed_mask = seed_voxels(truth, wm_threshold, max_seed_voxels, seed)
    fodf_img = Path(fit_dir) / "fodf.nii.gz"
    if fodf_img.exists():
        aff = nib.load(str(fodf_img)).affine
        if not np.allclose(aff, truth.affine, atol=1e-4):
            raise InputError(fodf_img, "affine differs from the phantom's")
    streamlines = track_from_mask(fit_dir, seed_mask, algorithm=algorithm, seeds_per_voxel=seeds_per_voxel,
                                  step_size=step_size, max_angle=max_angle, wm_threshold=wm_threshold, seed=seed)
    out = score_tractogram(streamlines, truth, min_inside=min_inside, dilation=dilation)
    out.update(seeds=int(seed_mask.sum()) * int(seeds_per_voxel), seed_voxels=int(seed_mask.sum()),
               seconds=time.perf_counter() - t0,
               tracking={"algorithm": algorithm, "seeds_per_voxel": int(seeds_per_voxel), "seed": int(seed),
                         "step_size": step_size, "max_angle": max_angle, "wm_threshold": wm_threshold,
                         "max_seed_voxels": max_seed_voxels})
    logger.info("%s: %d streamlines, valid %.1f%%, invalid %.1f%%, no connection %.1f%%", fit_dir,
                out["n_streamlines"], 100 * (out["valid_fraction"] or 0), 100 * (out["invalid_fraction"] or 0),
                100 * (out["no_connection_fraction"] or 0))
    return out
