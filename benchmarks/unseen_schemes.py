"""Held-out acquisitions: ``predict`` (the shipped model) and ``fit`` vs DIPY CSD on schemes not tuned on.

The shipped model was trained on b=1000 single-shell (15 and 30 directions) and on a
b=1000/2000/3000 multi-shell scheme. Research single-shell HARDI at higher b (b=2000 x 60,
b=3000 x 64 directions; ``shdeconv.sim`` schemes ``b2000`` and ``b3000``) is not among them,
nor is a two-shell b=1000/2000 x 50 scheme as UK Biobank acquires it (``ukbiobank``).
Spatial bundle phantoms (seed 0 by default; training used seeds 1000+) in these schemes at
each SNR; ``predict`` with the shipped model and its defaults, ``fit`` with its defaults (its
denoising as ``--denoise auto`` decides, then ``direct``; above b=1500 or with several shells
it starts from the linear deconvolution, so no trained model is involved), DIPY CSD raw and
after MP-PCA (the stronger baseline) with the same responses and mask; all scored
identically (``shdeconv evaluate``). On two shells DIPY's CSD runs on the b=2000 shell:
DIPY's MSMT-CSD, about 80 ms per voxel here, would take 10 minutes per phantom.
``fit``'s defaults were chosen on b=1000 data only. Seconds are the estimator's own
(``timings_s.predict`` / ``timings_s.fit``; MP-PCA not included).

Usage: python benchmarks/unseen_schemes.py [-o bench_out/unseen] [--snrs 10,20]
       [--schemes b2000,b3000,ukbiobank] [--markdown benchmarks/results/unseen_schemes_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from _report import add_phantom_options, publish

SCHEMES = ("b2000", "b3000", "ukbiobank")


def run(out: Path, snrs: list[float], seed: int, size: str, device: str, schemes=SCHEMES) -> str:
    from shdeconv.evaluation import evaluate_dirs, format_comparison
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.fitting import FIT_DENOISE, run_csd, run_fit, run_predict
    from shdeconv.sim import SCHEMES as SCHEME_TABLE
    from shdeconv.sim import simulate_to_dir

    m = machine_info(device)
    parts = [
        "# Held-out acquisitions (`benchmarks/unseen_schemes.py`)\n",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
        f"torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}. Phantom seed {seed}, size {size}, "
        "spatial bundle phantoms. These schemes are not in the shipped model's training set, and `fit`'s "
        "defaults were chosen on b=1000 data.\n",
    ]
    for scheme in schemes:
        for snr in snrs:
            ph = simulate_to_dir(out / f"{scheme}-snr{snr:g}" / "phantom", scheme=scheme, snr=snr, seed=seed,
                                 size=size)
            inputs = (ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs")
            rows = []
            pred = run_predict(*inputs, ph.parent / "predict", mask=ph / "mask.nii.gz", device=device,
                               progress=False, force=True)
            rows.append(("SHD-TV amortized (shipped model, predict)", pred["timings_s"]["predict"],
                         evaluate_dirs(ph.parent / "predict", ph)))
            fit = run_fit(*inputs, ph.parent / "fit", mask=ph / "mask.nii.gz", device=device, denoise=FIT_DENOISE,
                          progress=False, force=True)
            rows.append((f"fit (its defaults; denoising: {fit['denoise']})", fit["timings_s"]["fit"],
                         evaluate_dirs(ph.parent / "fit", ph)))
            shells = [b for b, _ in SCHEME_TABLE[scheme][1]]
            top = "" if len(shells) == 1 else f" (b={max(shells):g} shell)"
            for name, denoise in ((f"DIPY CSD{top}", "none"), (f"MP-PCA + DIPY CSD{top}", "mppca")):
                out_dir = ph.parent / f"csd-{denoise}"
                csd = run_csd(*inputs, out_dir, mask=ph / "mask.nii.gz", denoise=denoise, algorithm="ssst",
                              force=True)
                rows.append((name, csd["timings_s"]["fit"], evaluate_dirs(out_dir, ph)))
            parts.append(f"## {scheme}, SNR {snr:g}\n\n" + format_comparison(rows))
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/unseen", snrs="10,20")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated shdeconv.sim scheme names")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    text = run(args.output, [float(s) for s in args.snrs.split(",")], args.seed, args.size, args.device,
               schemes=args.schemes.split(","))
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
