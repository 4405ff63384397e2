"""A cell's shared inputs: its phantom (simulated once), its scored region and the MP-PCA denoised signal."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ._suite import SUITES, BenchmarkConfig, Cell

__all__ = ["cell_region", "mppca_signal", "simulate_cell"]


def simulate_cell(cell: Cell, phantom_dir: Path, config: BenchmarkConfig) -> Path:
    """The cell's phantom in ``phantom_dir``, simulated unless it is already there; returns ``phantom_dir``."""
    from ...sim import simulate_to_dir

    if (phantom_dir / "truth" / "truth.json").exists():
        return phantom_dir
    tmp = phantom_dir.with_name(phantom_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    simulate_to_dir(tmp, kind=cell.kind, scheme=cell.scheme, snr=cell.snr, seed=config.seed, size=config.size)
    os.replace(tmp, phantom_dir)
    return phantom_dir


def cell_region(cell: Cell, phantom_dir: Path, config: BenchmarkConfig) -> tuple[np.ndarray, dict] | None:
    """The scored region of a multishell cell (its central axial slab) and its description, else None."""
    if not cell.multishell or cell.kind != "spatial":
        return None
    import nibabel as nib

    from ...io import atomic_save_nifti

    img = nib.load(str(phantom_dir / "mask.nii.gz"))
    mask = np.asarray(img.dataobj) > 0
    k = min(SUITES[config.size]["region_slices"], mask.shape[2])
    z0 = (mask.shape[2] - k) // 2
    region = np.zeros_like(mask)
    region[:, :, z0:z0 + k] = mask[:, :, z0:z0 + k]
    path = phantom_dir.parent / "region_mask.nii.gz"
    if not path.exists():
        atomic_save_nifti(region.astype(np.uint8), img.affine, path)
    slices = f"z={z0}" if k == 1 else f"z={z0}-{z0 + k - 1}"
    return region, {"slices": slices, "voxels": int(region.sum()), "mask": str(path)}


def mppca_signal(phantom_dir: Path, out: Path) -> float:
    """MP-PCA denoised ``out/dwi.nii.gz`` (once per cell); returns the seconds it took."""
    import nibabel as nib

    from ...fitting import denoise_mppca
    from ...io import atomic_save_nifti, atomic_write_text

    record = out / "mppca.json"
    if record.exists() and (out / "dwi.nii.gz").exists():
        return float(json.loads(record.read_text())["seconds"])
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    img = nib.load(str(phantom_dir / "dwi.nii.gz"))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    mask = np.asarray(nib.load(str(phantom_dir / "mask.nii.gz")).dataobj) > 0
    atomic_save_nifti(denoise_mppca(data, mask), img.affine, out / "dwi.nii.gz")
    seconds = time.perf_counter() - t
    atomic_write_text(record, json.dumps({"seconds": seconds}) + "\n")
    return seconds
