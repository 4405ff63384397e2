"""The bar case's tractography: every method's fODF tracked from the same seeds and scored like Tractometer.

After the bar case's methods ran, each method's ``fodf.nii.gz`` is tracked with the settings of
:data:`~shdeconv.evaluation.benchmark._suite.TRACKING` from seeds at the centres of a fixed
random subset of the phantom's true white-matter voxels (:data:`SUITES`'
``tracking_seed_voxels``), identical for every method, and scored against the phantom's bundles
(:func:`~shdeconv.evaluation._tractometry.track_and_score`; the rules are in that module).
Each method's result is kept in ``<cell>/<method>/tractometry.json`` with its settings and is
not computed again while they hold; running a method again removes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ._suite import SUITES, TRACKING, BenchmarkConfig, Cell

__all__ = ["TRACTOMETRY_FILE", "ensure_bundle_truth", "track_cell", "tracking_settings"]

logger = logging.getLogger(__name__)

#: per-method result file of the bar case's tractography
TRACTOMETRY_FILE = "tractometry.json"


def tracking_settings(config: BenchmarkConfig) -> dict:
    """The tracking settings of a run (stored with every result, which is reused only while they hold)."""
    return {**TRACKING, "max_seed_voxels": int(SUITES[config.size]["tracking_seed_voxels"]), "seed": int(config.seed)}


def ensure_bundle_truth(cell: Cell, phantom_dir: Path, config: BenchmarkConfig) -> None:
    """Add the bundle files to a cell's phantom folder written before they existed.

    The phantom is simulated again (its arrays do not depend on the bundle truth) and checked
    against the stored mask before its ``truth/bundles.nii.gz``, ``truth/bundle_ends.nii.gz``
    and the ``bundle_names`` of ``truth.json`` are written.
    """
    import nibabel as nib

    from ...io import InputError, atomic_save_nifti, atomic_write_text
    from ...sim import spatial_phantom

    truth = phantom_dir / "truth"
    if (truth / "bundles.nii.gz").exists() and (truth / "bundle_ends.nii.gz").exists():
        return
    ph = spatial_phantom(scheme=cell.scheme, snr=cell.snr, seed=config.seed, size=config.size)
    stored = np.asarray(nib.load(str(truth / "mask.nii.gz")).dataobj) > 0
    if stored.shape != ph.mask.shape or not np.array_equal(stored, ph.mask):
        raise InputError(phantom_dir, "was made by another phantom generator; its bundles cannot be added")
    atomic_save_nifti(ph.bundle_masks.astype(np.uint8), ph.affine, truth / "bundles.nii.gz")
    atomic_save_nifti(ph.bundle_ends.astype(np.int8), ph.affine, truth / "bundle_ends.nii.gz")
    meta = json.loads((truth / "truth.json").read_text())
    meta["bundle_names"] = list(ph.bundle_names)
    atomic_write_text(truth / "truth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    logger.info("%s: bundle files added", phantom_dir)


def track_cell(cell: Cell, cell_dir: Path, phantom_dir: Path, records: dict[str, dict], config: BenchmarkConfig,
               failures: list[dict]) -> dict:
    """Track and score every finished method of a cell (resumable).

    Parameters
    ----------
    cell : Cell
    cell_dir : Path
        The cell's folder, holding ``<method>/fodf.nii.gz``.
    phantom_dir : Path
        The cell's phantom.
    records : dict
        Method name -> its benchmark record (``label`` is used).
    config : BenchmarkConfig
    failures : list
        A ``{"cell", "method", "error"}`` entry is appended for every method that could not be tracked.

    Returns
    -------
    dict
        ``cell``, ``settings`` (:func:`tracking_settings`), ``seed_voxels`` and ``methods``: name ->
        :func:`~shdeconv.evaluation._tractometry.track_and_score`'s dict with ``method``, ``label``
        and ``settings``.
    """
    from ...io import atomic_write_text
    from .._tractometry import track_and_score

    settings = tracking_settings(config)
    out = {"cell": cell.name, "settings": settings, "seed_voxels": None, "methods": {}}
    try:
        ensure_bundle_truth(cell, phantom_dir, config)
    except Exception as e:  # the rest of the suite's results stand without the tractography
        logger.exception("%s: no bundle truth", cell.name)
        failures.append({"cell": cell.name, "method": "tractography", "error": f"{type(e).__name__}: {e}"})
        return out
    for name, rec in records.items():
        path = cell_dir / name / TRACTOMETRY_FILE
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("settings") == settings:
                out["methods"][name] = old
                logger.info("%s/%s: tractography done before, not run again", cell.name, name)
                continue
        try:
            scores = track_and_score(cell_dir / name, phantom_dir, seeds_per_voxel=settings["seeds_per_voxel"],
                                     seed=settings["seed"], algorithm=settings["algorithm"],
                                     step_size=settings["step_size"], max_angle=settings["max_angle"],
                                     wm_threshold=settings["wm_threshold"],
                                     max_seed_voxels=settings["max_seed_voxels"])
        except Exception as e:  # one failing arm must not lose the others
            logger.exception("%s/%s: tractography failed", cell.name, name)
            failures.append({"cell": cell.name, "method": f"{name} (tractography)",
                             "error": f"{type(e).__name__}: {e}"})
            continue
        record = {"method": name, "label": rec["label"], "settings": settings, **scores}
        atomic_write_text(path, json.dumps(record, indent=2, default=float) + "\n")
        out["methods"][name] = record
    if out["methods"]:
        out["seed_voxels"] = next(iter(out["methods"].values()))["seed_voxels"]
    return out
