"""Real data with fewer directions: DIPY's ``small_64D`` at 64, 30 and 15 directions, every method against references.

There is no ground truth in a real scan, so this measures agreement instead. The 64-direction
b=1000 volume (10 x 10 x 10 voxels of 2 mm, one b=0) is subsampled to 30 and 15 directions
(greedy farthest-point subsets, antipodally symmetric, seeded) and every method runs on each
at its defaults with the brain mask it computes itself. Its peaks (``peaks.nii.gz``, world
frame) are compared, in the voxels where the 64-direction tensor FA exceeds a threshold, with:

* the same method on all 64 directions (how stable it is when directions are taken away), and
* DIPY CSD on all 64 directions (a common reference, itself noisy).

Per cell: the median angle (degrees) between the reference's first peak and the nearest peak
of the method, and the fraction of voxels where both find the same number of peaks.

Usage: python benchmarks/real_subsampled.py [-o bench_out/real] [--methods predict,fit,csd,csd+mppca]
       [--seed 0] [--markdown benchmarks/results/real_subsampled_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
from _report import publish, run_job

DIRECTIONS = (64, 30, 15)
FA_THRESHOLDS = (0.2, 0.5)
METHODS = ("predict", "fit", "fit+localpca", "csd", "csd+mppca", "csd+localpca")  # fit@I: fit --init I


def subset(bvecs: np.ndarray, candidates: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of the ``candidates`` volumes, spread over the sphere (greedy farthest point, antipodal)."""
    v = bvecs[candidates] / np.linalg.norm(bvecs[candidates], axis=1, keepdims=True)
    chosen = [int(np.random.default_rng(seed).integers(len(v)))]
    for _ in range(n - 1):
        gap = np.min(1 - np.abs(v @ v[chosen].T), axis=1)
        gap[chosen] = -1
        chosen.append(int(np.argmax(gap)))
    return np.sort(candidates[chosen])


def read_dipy(name: str):
    """One of DIPY's small volumes: its image, signal ``(X, Y, Z, G)`` float32, bvals ``(G,)`` and
    bvecs ``(G, 3)``."""
    import nibabel as nib
    from dipy.data import get_fnames

    fdwi, fbval, fbvec = get_fnames(name=name)
    img = nib.load(fdwi)
    bvecs = np.loadtxt(fbvec)
    return img, img.get_fdata(dtype=np.float32), np.loadtxt(fbval).ravel(), bvecs.T if bvecs.shape[0] == 3 else bvecs


def write_subsets(out: Path, seed: int) -> dict[int, Path]:
    import nibabel as nib

    img, data, bvals, bvecs = read_dipy("small_64D")
    b0, dw = np.flatnonzero(bvals <= 50), np.flatnonzero(bvals > 50)
    dirs = {}
    for n in DIRECTIONS:
        keep = np.concatenate([b0, dw if n >= dw.size else subset(bvecs, dw, n, seed)])
        d = out / f"data{n}"
        d.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data[..., keep], img.affine, img.header), d / "dwi.nii.gz")
        np.savetxt(d / "bvals", bvals[keep][None], fmt="%g")
        np.savetxt(d / "bvecs", bvecs[keep].T, fmt="%.6f")
        dirs[n] = d
    return dirs


def read_peaks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit peak directions ``(X, Y, Z, P, 3)`` and whether each peak exists ``(X, Y, Z, P)``."""
    import nibabel as nib

    a = np.nan_to_num(nib.load(path).get_fdata())
    a = a.reshape(a.shape[:3] + (-1, 3))
    n = np.linalg.norm(a, axis=-1)
    return a / np.maximum(n, 1e-12)[..., None], n > 0


def agreement(ref, test, where: np.ndarray) -> tuple[float, float]:
    """Median angle (degrees) from the reference's first peak to the nearest test peak, and the
    fraction of voxels with as many peaks in both."""
    (rd, rv), (td, tv) = ref, test
    cos = np.abs(np.einsum("vd,vkd->vk", rd[where][:, 0], td[where]))
    cos[~tv[where]] = 0.0
    angle = np.degrees(np.arccos(np.clip(cos.max(axis=1), 0.0, 1.0)))
    return float(np.median(angle)), float(np.mean(rv[where].sum(1) == tv[where].sum(1)))


def run(out: Path, methods: list[str], seed: int) -> str:
    import nibabel as nib
    from dipy.core.gradients import gradient_table
    from dipy.data import get_fnames
    from dipy.reconst.dti import TensorModel

    from shdeconv.evaluation.benchmark import machine_info

    dirs = write_subsets(out, seed)
    for m in dict.fromkeys(methods + ["csd"]):
        for n, d in dirs.items():
            run_job(m, d, out / f"{m.replace('+', '-')}{n}")
    fdwi, fbval, fbvec = get_fnames(name="small_64D")
    fa = TensorModel(gradient_table(np.loadtxt(fbval), bvecs=np.loadtxt(fbvec))).fit(nib.load(fdwi).get_fdata()).fa

    def peaks(m, n):
        return read_peaks(out / f"{m.replace('+', '-')}{n}" / "peaks.nii.gz")

    info = machine_info("cpu")
    lines = ["# Real data with fewer directions (`benchmarks/real_subsampled.py`)\n",
             (f"Machine: {info['cpu']}, {info['cpu_count']} CPUs; torch {info['torch']}, DIPY {info['dipy']}, "
              f"shdeconv {info['shdeconv']}. DIPY's `small_64D` (b=1000 x 64, 2 mm), subsets seeded {seed}. "
              f"Command: `python benchmarks/real_subsampled.py --seed {seed} --methods {','.join(methods)}`.\n"),
             ("Each cell: median angle (degrees) from the reference's first peak to the method's nearest "
             "peak / fraction of voxels with as many peaks as the reference.\n")]
    for th in FA_THRESHOLDS:
        where = fa > th
        for ref_name in ("itself", "csd"):
            lines += [f"## FA > {th} ({int(where.sum())} voxels), reference: "
                      + ("the same method on all 64 directions" if ref_name == "itself" else "DIPY CSD on all 64 directions")
                      + "\n", "| method | " + " | ".join(f"{n} directions" for n in DIRECTIONS) + " |",
                      "|---|" + "---:|" * len(DIRECTIONS)]
            for m in methods:
                ref = peaks(m if ref_name == "itself" else "csd", 64)
                cells = [agreement(ref, peaks(m, n), where) for n in DIRECTIONS]
                lines.append(f"| {m} | " + " | ".join(f"{a:.1f} / {c:.2f}" for a, c in cells) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/real"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seed", type=int, default=0, help="seed of the direction subsets")
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore")  # DIPY's lmax-vs-directions warnings at 15 directions
    methods = args.methods.split(",")
    for m in methods:
        if m.partition("@")[0].partition("+")[0] not in ("predict", "fit", "csd"):
            p.error(f"unknown method {m!r}")
    publish(run(args.output, methods, args.seed), args.markdown)


if __name__ == "__main__":
    main()
