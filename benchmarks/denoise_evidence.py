"""What ``--denoise auto`` sees: the neighbour coherence of phantoms of every kind and of real crops.

``fit`` runs MP-PCA by default only where the fibres of neighbouring voxels agree
(:func:`shdeconv.fitting.choose_denoise`): MP-PCA assumes that a patch's signals span few
dimensions, which fails on voxels simulated independently. The evidence is
``GradientCheck.neighbour_coherence`` from the gradient check's tensor fit (0: unrelated
orientations, 1: parallel). This script prints it, with the number of voxel pairs behind it
and the choice, for

* the bundle (``spatial``) and independent-voxel (``voxelwise``) phantoms of ``shdeconv.sim``
  per scheme, SNR and seed, clean and with all four variations of ``benchmarks/robustness.py``
  (dispersion 15 degrees, diffusivities +-15%, noise smoothed to FWHM 1.5 voxels, bias field);
* the brain-shaped phantom (``shdeconv.sim._brain``, clinical, SNR 20);
* DIPY's real crops: ``small_64D`` on all 64 directions and on subsets of 30, 15 and 10
  (``benchmarks/real_subsampled.py``'s farthest-point subsets), ``small_25`` and ``small_101D``.

The threshold (:data:`shdeconv.fitting.AUTO_DENOISE_COHERENCE`) should sit in the gap between
the independent voxels and everything else.

Usage: python benchmarks/denoise_evidence.py [--seeds 0,1] [--snrs 5,10,20] [--schemes clinical,sparse,multishell]
       [--size default] [--brain-shape 60,72,60] [--markdown benchmarks/results/denoise_evidence_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
from _report import publish
from robustness import ALL as ALL_FOUR

SCHEMES = ("clinical", "sparse", "multishell")
SMALL_64D_DIRECTIONS = (64, 30, 15, 10)


def evidence(data, bvals, bvecs, affine, mask=None) -> tuple[float, int, str]:
    """``(neighbour coherence, pairs, auto's choice)`` of one acquisition (FSL ``bvecs`` ``(G, 3)``)."""
    from shdeconv.direction import check_gradients
    from shdeconv.fitting import choose_denoise

    check = check_gradients(data, bvals, bvecs, affine, mask)
    return check.neighbour_coherence, check.neighbour_pairs, choose_denoise(check)[0]


def phantom_rows(seeds, snrs, schemes=SCHEMES, size: str = "default", brain_shape=(60, 72, 60)) -> list[tuple]:
    from shdeconv.io import world_to_fsl_bvecs
    from shdeconv.sim import PhantomVariation, spatial_phantom, voxelwise_phantom
    from shdeconv.sim._brain import brain_phantom

    rows = []
    for kind, make in (("voxelwise", voxelwise_phantom), ("spatial", spatial_phantom)):
        for variation in (None, PhantomVariation(**ALL_FOUR)):
            for scheme in schemes:
                for snr in snrs:
                    for seed in seeds:
                        ph = make(scheme=scheme, snr=snr, seed=seed, variation=variation, size=size)
                        bvecs = world_to_fsl_bvecs(ph.directions_world, ph.affine)
                        label = f"{kind}{', all four' if variation else ''}"
                        rows.append((label, scheme, f"SNR {snr:g}, seed {seed}",
                                     *evidence(ph.dwi, ph.bvals, bvecs, ph.affine, ph.mask)))
    ph = brain_phantom(tuple(brain_shape), scheme="clinical", seed=0)
    rows.append((f"brain-shaped {'x'.join(map(str, brain_shape))}", "clinical", "SNR 20, seed 0",
                 *evidence(ph.dwi, ph.bvals, world_to_fsl_bvecs(ph.directions_world, ph.affine), ph.affine, ph.mask)))
    return rows


def real_rows(seed: int) -> list[tuple]:
    from real_subsampled import read_dipy, subset

    rows = []
    for name in ("small_64D", "small_25", "small_101D"):
        img, data, bvals, bvecs = read_dipy(name)
        b0, dw = np.flatnonzero(bvals <= 50), np.flatnonzero(bvals > 50)
        counts = SMALL_64D_DIRECTIONS if name == "small_64D" else (dw.size,)
        for n in counts:
            keep = np.concatenate([b0, dw if n >= dw.size else subset(bvecs, dw, n, seed)])
            rows.append((f"real: {name}", f"{n} directions", f"{data.shape[0]}x{data.shape[1]}x{data.shape[2]}",
                         *evidence(data[..., keep], bvals[keep], bvecs[keep], img.affine)))
    return rows


def run(seeds, snrs, subset_seed: int, schemes=SCHEMES, size: str = "default", brain_shape=(60, 72, 60)) -> str:
    from shdeconv.fitting import AUTO_DENOISE_COHERENCE

    rows = phantom_rows(seeds, snrs, schemes, size, brain_shape) + real_rows(subset_seed)
    options = "".join([f" --schemes {','.join(schemes)}" if tuple(schemes) != SCHEMES else "",
                       f" --size {size}" if size != "default" else "",
                       f" --brain-shape {','.join(map(str, brain_shape))}" if tuple(brain_shape) != (60, 72, 60)
                       else ""])
    lines = ["# What `--denoise auto` sees (`benchmarks/denoise_evidence.py`)", "",
             f"Command: `python benchmarks/denoise_evidence.py --seeds {','.join(map(str, seeds))} "
             f"--snrs {','.join(f'{s:g}' for s in snrs)}{options}`. Neighbour coherence: 0 for unrelated orientations, "
             f"1 for parallel ones; `auto` runs MP-PCA at {AUTO_DENOISE_COHERENCE:g} or more.", "",
             "| data | scheme | setting | neighbour coherence | pairs | auto runs |",
             "|---|---|---|---:|---:|---|"]
    lines += [f"| {a} | {b} | {c} | {coh:.3f} | {pairs} | {choice} |" for a, b, c, coh, pairs, choice in rows]
    groups: dict[str, list[float]] = {}
    for label, *_, coh, _, _ in rows:
        groups.setdefault("independent voxels" if label.startswith("voxelwise") else
                          "real" if label.startswith("real") else "bundles and brain", []).append(coh)
    lines += [""] + [f"- {k}: {min(v):.3f} to {max(v):.3f} ({len(v)} volumes)" for k, v in groups.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--snrs", default="5,10,20")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--size", default="default", choices=["default", "quick"],
                   help="size of the bundle and voxel phantoms")
    p.add_argument("--brain-shape", default="60,72,60")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of small_64D's direction subsets")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    text = run([int(s) for s in args.seeds.split(",")], [float(s) for s in args.snrs.split(",")], args.subset_seed,
               tuple(args.schemes.split(",")), args.size, tuple(int(v) for v in args.brain_shape.split(",")))
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
