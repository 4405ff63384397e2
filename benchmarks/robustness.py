"""Phantom kinds the methods were not built on: dispersion, diffusivity jitter, correlated noise, bias field.

The shipped model was trained, and ``fit``'s defaults were chosen, on clean phantoms: straight
sticks, diffusivities within 5% along a bundle, i.i.d. Rician noise, a flat receive field.
Real scans have none of that. Here the same spatial bundle phantom (same geometry, fractions
and noise draws) is simulated clean and with each departure of
:class:`shdeconv.sim.PhantomVariation` alone and all together, plus the voxel-wise phantom with
all of them, and every method runs on each with its defaults and the same mask:

* ``predict`` (the shipped model), ``fit`` (its defaults: PCA denoising, then ``direct``),
* DIPY CSD raw and after MP-PCA (the stronger baseline), same responses estimated from the data;
* on request ``fit+D`` and ``csd+D``: with denoising ``D`` (``none``, ``mppca``, ``localpca``);
  ``fit@I``: ``fit`` started from ``I`` (``--init linear``, ``csd`` or ``predict``).

The departures' sizes are set once below from the literature, not tuned: dispersion 15 degrees
(Rayleigh scale, about a Watson concentration of 15), diffusivities +-15% voxel to voxel,
noise smoothed to a 1.5-voxel FWHM (partial Fourier / parallel imaging), a +-30% bias field.
Scores: ``shdeconv evaluate`` (success within 25 degrees per fibre count, crossing error).

Usage: python benchmarks/robustness.py [-o bench_out/robustness] [--seed 1] [--snrs 20]
       [--scheme clinical] [--methods predict,fit,csd,csd+mppca] [--kinds clean,all,...] [--model M]
       [--track]
       [--markdown benchmarks/results/robustness_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from _report import add_phantom_options, publish, run_job

#: name -> (label, phantom kind, PhantomVariation settings)
ALL = {"dispersion_deg": 15.0, "diffusivity_jitter": 0.15, "noise_fwhm": 1.5, "bias_field": 0.3}
KINDS = {
    "clean": ("clean", "spatial", {}),
    "dispersion": ("dispersion 15°", "spatial", {"dispersion_deg": 15.0}),
    "jitter": ("diffusivities ±15%", "spatial", {"diffusivity_jitter": 0.15}),
    "noise": ("noise FWHM 1.5 voxels", "spatial", {"noise_fwhm": 1.5}),
    "bias": ("bias field ±30%", "spatial", {"bias_field": 0.3}),
    "all": ("all four", "spatial", ALL),
    "voxelwise-all": ("voxel-wise phantom, all four", "voxelwise", ALL),
}
METHODS = ("predict", "fit", "fit+none", "fit+mppca", "fit+localpca", "fit@linear", "fit@csd", "fit@predict",
           "csd", "csd+mppca", "csd+localpca")
DEFAULT_METHODS = ("predict", "fit", "csd", "csd+mppca")
DENOISE_LABELS = {"none": "raw ", "mppca": "MP-PCA + ", "localpca": "local PCA + "}
LABELS = {"predict": "predict (shipped model)", "fit": "fit (its defaults)",
          **{f"fit+{d}": f"{DENOISE_LABELS[d]}fit" for d in DENOISE_LABELS},
          **{f"fit@{i}": f"fit --init {i}" for i in ("linear", "csd", "predict")},
          "csd": "DIPY CSD", **{f"csd+{d}": f"{DENOISE_LABELS[d]}DIPY CSD" for d in ("mppca", "localpca")}}
#: tracking (``--track``): seed voxels shared by every method, and the MRtrix3 algorithms
SEED_VOXELS = 1000
MRTRIX_TRACKERS = ("SD_Stream", "iFOD2")


def run_method(method: str, ph: Path, out: Path, device: str, model: Path | None = None) -> tuple[float, dict]:
    from shdeconv.evaluation import evaluate_dirs

    seconds, _ = run_job(method, ph, out, mask=ph / "mask.nii.gz", device=device, model=model)
    return seconds, evaluate_dirs(out, ph)


def track(method_dir: Path, ph: Path) -> dict[str, tuple[float, float]]:
    """Valid and invalid streamline fractions of each tracker on a method's fODF (spatial phantoms).

    The suite's deterministic DIPY tracking (``shdeconv track`` defaults: WM-fraction stop at
    0.25) and, where MRtrix3 is installed, ``tckgen`` SD_Stream and iFOD2 at their defaults
    (FOD-amplitude cutoff 0.1), all from one seed at the centre of the same 1000 true-WM voxels,
    scored alike (:func:`shdeconv.evaluation._tractometry.score_tractogram`).
    """
    import nibabel as nib
    import numpy as np

    from shdeconv.evaluation._tractometry import (
        rasmm_to_voxel,
        score_tractogram,
        seed_voxels,
        track_and_score,
    )
    from shdeconv.sim import load_truth

    s = track_and_score(method_dir, ph, max_seed_voxels=SEED_VOXELS)
    scores = {"DIPY det": (s["valid_fraction"], s["invalid_fraction"])}
    if shutil.which("tckgen") is None:
        return scores
    truth = load_truth(ph)
    affine = nib.load(ph / "dwi.nii.gz").affine
    with tempfile.TemporaryDirectory() as tmp:
        seeds, tck = Path(tmp) / "seeds.nii.gz", Path(tmp) / "tracks.tck"
        nib.save(nib.Nifti1Image(seed_voxels(truth, 0.25, SEED_VOXELS, 0).astype(np.uint8), affine), seeds)
        for algorithm in MRTRIX_TRACKERS:
            subprocess.run(["tckgen", str(method_dir / "fodf.nii.gz"), str(tck), "-algorithm", algorithm,
                            "-seed_grid_per_voxel", str(seeds), "1", "-select", "0", "-force", "-quiet"],
                           check=True, env=dict(os.environ, MRTRIX_RNG_SEED="0"))
            s = score_tractogram(rasmm_to_voxel(nib.streamlines.load(str(tck)).streamlines, affine), truth)
            scores[f"MRtrix3 {algorithm}"] = (s["valid_fraction"], s["invalid_fraction"])
    return scores


def run(out: Path, snrs: list[float], seed: int, size: str, device: str, scheme: str,
        methods: list[str], kinds: list[str], model: Path | None = None, tracking: bool = False) -> str:
    from shdeconv.evaluation import crossing_error
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.sim import PhantomVariation, simulate_to_dir

    m = machine_info(device)
    labels = dict(LABELS, **({"predict": f"predict (model {model.name})"} if model else {}))
    lines = [
        "# Phantom kinds not seen in training (`benchmarks/robustness.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
         f"torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}. Scheme {scheme}, phantom seed {seed}, "
         f"size {size}. Command: `python benchmarks/robustness.py --seed {seed} --scheme {scheme} "
         f"--snrs {','.join(f'{s:g}' for s in snrs)}{' --track' if tracking else ''}"
         + (f" --methods {','.join(methods)}" if tuple(methods) != DEFAULT_METHODS else "")
         + (f" --kinds {','.join(kinds)}" if tuple(kinds) != tuple(KINDS) else "") + "`"
         + (f" (predict: `--model {model}`)" if model else "") + ".\n"),
        "Each cell: overall / 1-fibre / 2-fibre success, then the crossing error (degrees).\n",
        "| SNR | phantom | " + " | ".join(labels[mm] for mm in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    raw = {}
    tracked = []
    for snr in snrs:
        for name in kinds:
            label, kind, settings = KINDS[name]
            slug = f"{name}-snr{snr:g}"
            ph = simulate_to_dir(out / slug / "phantom", kind=kind, scheme=scheme, snr=snr, seed=seed, size=size,
                                 variation=PhantomVariation(**settings))
            cells = []
            for method in methods:
                seconds, s = run_method(method, ph, out / slug / method.replace("+", "-"), device, model)
                g = s["groups"]
                raw[f"{slug}/{method}"] = {"seconds": seconds, "success": g["all"]["success_rate"],
                                           "success1": g["1"]["success_rate"], "success2": g["2"]["success_rate"],
                                           "crossing_error": crossing_error(s)}
                cells.append(f"{g['all']['success_rate']:.3f} / {g['1']['success_rate']:.3f} / "
                             f"{g['2']['success_rate']:.3f}, {crossing_error(s):.1f}°")
                logging.getLogger("robustness").warning("%s %s: %s (%.1f s)", slug, method, cells[-1], seconds)
                if tracking and kind == "spatial":
                    raw[f"{slug}/{method}"]["tracking"] = scores = track(out / slug / method.replace("+", "-"), ph)
                    tracked.append((snr, label, method, scores))
            lines.append(f"| {snr:g} | {label} | " + " | ".join(cells) + " |")
    if tracked:
        trackers = list(tracked[0][3])
        lines += ["", (f"Tractography (valid / invalid streamline fractions; one seed in each of the same {SEED_VOXELS} "
                      "true-WM voxels; `track` in this script):"), "",
                  "| SNR | phantom | method | " + " | ".join(trackers) + " |", "|---|---|---|" + "---|" * len(trackers)]
        lines += [f"| {snr:g} | {label} | {labels[method]} | "
                  + " | ".join(f"{v:.3f} / {i:.3f}" for v, i in (scores[t] for t in trackers)) + " |"
                  for snr, label, method, scores in tracked]
    (out / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/robustness", snrs="20")
    p.add_argument("--scheme", default="clinical")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--model", type=Path, default=None, help="predict with this model file (default: the shipped one)")
    p.add_argument("--track", action="store_true",
                   help="also track every method on the spatial phantoms (DIPY; MRtrix3 tckgen where installed)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {', '.join(KINDS)}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    methods = args.methods.split(",")
    kinds = args.kinds.split(",")
    for k in kinds:
        if k not in KINDS:
            p.error(f"unknown kind {k!r}; choose from {', '.join(KINDS)}")
    for mm in methods:
        if mm not in METHODS:
            p.error(f"unknown method {mm!r}; choose from {', '.join(METHODS)}")
    args.output.mkdir(parents=True, exist_ok=True)
    text = run(args.output, [float(s) for s in args.snrs.split(",")], args.seed, args.size, args.device,
               args.scheme, methods, kinds, args.model, args.track)
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
