"""Up-front estimate of a benchmark run's time, from per-voxel and per-iteration costs."""

from __future__ import annotations

import numpy as np

from ._suite import BAR_CELL, METHODS, SUITES, BenchmarkConfig, Cell, plan_cells

__all__ = ["estimate_seconds"]

#: rough costs on this project's 2-core CPU VM (seconds), measured when the suite was sized; used for the
#: up-front estimate only. Voxels are those of the mask, volumes those of the scheme.
_COST = {
    "net_per_iteration": {"shd-tv": 1.15, "shd": 1.2, "rtesd": 4.4, "esd": 2.7, "direct": 0.1},
    "net_per_voxel": 1.2e-3,  # responses, prediction and outputs
    "pretrained_per_voxel": 2.5e-3,  # responses, one pass on 8^3 tiles, outputs
    "csd_per_voxel": 6e-4,
    "mppca_per_voxel_volume": 1.6e-5,
    "msmt_per_voxel": 0.07,
    "mrtrix_csd": 25.0,  # dwi2response tournier (an iterative script) dominates
    "mrtrix_msmt": 5.0,  # dwi2response dhollander
    "mrtrix_msmt_per_voxel_volume": 1.2e-5,
    "dwidenoise_per_voxel": 7e-5,  # at 33 volumes, growing as (volumes / 33) ** 2.5
    "score_per_voxel": 1.6e-4,
    "simulate": 1.5,
    "tracking_per_seed": 2.5e-3,  # the bar case's tractography: DIPY tracking at 0.5 mm steps
    "tracking": 0.4,  # per method: loading, rotating the fODF, the direction getter, scoring
}
_SPATIAL_MASK_FRACTION = 0.82
_WM_SEED_FRACTION = 0.5  # voxels of the spatial phantom's mask with a true WM fraction above 0.25


def _start(init: str | None, scheme: str) -> str:
    """Where ``direct`` starts on ``scheme``: :func:`~shdeconv.fitting.start_for` of its shells."""
    from ...fitting import start_for
    from ...sim import SCHEMES

    return start_for(init or "linear", [b for b, _ in SCHEMES[scheme][1]])


def _scheme_volumes(scheme: str) -> int:
    from ...sim import SCHEMES

    n_b0, shells = SCHEMES[scheme]
    return n_b0 + sum(n for _, n in shells)


def _cell_voxels(cell: Cell, size: str) -> tuple[float, float]:
    """Estimated voxels in the mask and in the scored region."""
    from ...sim import SIZES

    if cell.kind == "voxelwise":
        n = float(SIZES[size]["voxelwise"])
        return n, n
    shape = SIZES[size]["spatial"]
    n = _SPATIAL_MASK_FRACTION * float(np.prod(shape))
    if cell.multishell:
        return n, n * min(1.0, SUITES[size]["region_slices"] / shape[2])
    return n, n


def estimate_seconds(config: BenchmarkConfig, *, mrtrix: bool | None = None) -> dict:
    """Up-front estimate of the run time on a 2-core CPU (a GPU makes the networks faster).

    Parameters
    ----------
    config : BenchmarkConfig
    mrtrix : bool, optional
        Whether MRtrix3's arms will run; default: whether MRtrix3 is installed.

    Returns
    -------
    dict
        ``total`` and ``networks`` (seconds) and ``by_cell`` (cell name -> seconds).
    """
    if mrtrix is None:
        from ...baselines import mrtrix_version

        mrtrix = mrtrix_version() is not None
    c = _COST
    it = config.fit_iterations
    by_cell, nets = {}, 0.0
    for cell in plan_cells(config, mrtrix=mrtrix):
        vox, region = _cell_voxels(cell, config.size)
        vols = _scheme_volumes(cell.scheme)
        t = c["simulate"]
        specs = [METHODS[m] for m in cell.methods]
        if any((s.denoise and s.engine != "mrtrix") or s.job_denoise != "none" for s in specs):
            t += c["mppca_per_voxel_volume"] * vox * vols  # once per cell, shared
        for s in specs:
            if s.engine == "net":
                cost = c["net_per_iteration"][s.variant] * it + c["net_per_voxel"] * vox
                if s.variant == "direct" and _start(s.init, cell.scheme) == "predict":
                    cost += c["pretrained_per_voxel"] * vox
                nets += cost
                t += cost
            elif s.engine == "pretrained":
                t += c["pretrained_per_voxel"] * vox + c["net_per_iteration"]["shd-tv"] * int(s.variant or 0)
            elif s.engine == "dipy":
                t += c["msmt_per_voxel"] * region if s.variant == "msmt" else c["csd_per_voxel"] * vox
            else:
                t += (c["mrtrix_msmt"] + c["mrtrix_msmt_per_voxel_volume"] * vox * vols if cell.multishell
                      else c["mrtrix_csd"])
                if s.denoise:
                    t += c["dwidenoise_per_voxel"] * vox * (vols / 33.0) ** 2.5
            t += c["score_per_voxel"] * region
            if cell.name == BAR_CELL:
                seeds = min(SUITES[config.size]["tracking_seed_voxels"], _WM_SEED_FRACTION * vox)
                t += c["tracking"] + c["tracking_per_seed"] * seeds
        by_cell[cell.name] = t
    return {"total": float(sum(by_cell.values())), "networks": float(nets), "by_cell": by_cell}
