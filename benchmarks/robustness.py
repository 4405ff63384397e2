"""Phantom kinds the methods were not built on: dispersion, diffusivity jitter, correlated noise, bias field.

The shipped model was trained, and ``fit``'s defaults were chosen, on clean phantoms: straight
sticks, diffusivities within 5% along a bundle, i.i.d. Rician noise, a flat receive field.
Real scans have none of that. Here the same spatial bundle phantom (same geometry, fractions
and noise draws) is simulated clean and with each departure of
:class:`shdeconv.sim.PhantomVariation` alone and all together, plus the voxel-wise phantom with
all of them, and every method runs on each with its defaults and the same mask:

* ``predict`` (the shipped model), ``fit`` (its default: MP-PCA, then ``direct``),
* DIPY CSD raw and after MP-PCA (the stronger baseline), same responses estimated from the data.

The departures' sizes are set once below from the literature, not tuned: dispersion 15 degrees
(Rayleigh scale, about a Watson concentration of 15), diffusivities +-15% voxel to voxel,
noise smoothed to a 1.5-voxel FWHM (partial Fourier / parallel imaging), a +-30% bias field.
Scores: ``shdeconv evaluate`` (success within 25 degrees per fibre count, crossing error).

Usage: python benchmarks/robustness.py [-o bench_out/robustness] [--seed 1] [--snrs 20]
       [--scheme clinical] [--methods predict,fit,csd,csd+mppca] [--kinds clean,all,...]
       [--markdown benchmarks/results/robustness_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from _report import add_phantom_options, publish

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
METHODS = ("predict", "fit", "csd", "csd+mppca")
LABELS = {"predict": "predict (shipped model)", "fit": "fit (defaults: MP-PCA + direct)",
          "csd": "DIPY CSD", "csd+mppca": "MP-PCA + DIPY CSD"}


def run_method(method: str, ph: Path, out: Path, device: str) -> tuple[float, dict]:
    from shdeconv.evaluation import evaluate_dirs
    from shdeconv.fitting import run_csd, run_fit, run_predict

    inputs = (ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs", out)
    common = {"mask": ph / "mask.nii.gz", "force": True}
    if method == "predict":
        seconds = run_predict(*inputs, device=device, progress=False, **common)["timings_s"]["predict"]
    elif method == "fit":
        seconds = run_fit(*inputs, device=device, progress=False, denoise="mppca", **common)["timings_s"]["fit"]
    elif method in ("csd", "csd+mppca"):
        denoise = "mppca" if method == "csd+mppca" else "none"
        seconds = run_csd(*inputs, denoise=denoise, **common)["timings_s"]["fit"]
    else:
        raise ValueError(f"unknown method {method!r}")
    return seconds, evaluate_dirs(out, ph)


def run(out: Path, snrs: list[float], seed: int, size: str, device: str, scheme: str,
        methods: list[str], kinds: list[str]) -> str:
    from shdeconv.evaluation import crossing_error
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.sim import PhantomVariation, simulate_to_dir

    m = machine_info(device)
    lines = [
        "# Phantom kinds not seen in training (`benchmarks/robustness.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
         f"torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}. Scheme {scheme}, phantom seed {seed}, "
         f"size {size}. Command: `python benchmarks/robustness.py --seed {seed} --scheme {scheme} "
         f"--snrs {','.join(f'{s:g}' for s in snrs)}`.\n"),
        "Each cell: overall / 1-fibre / 2-fibre success, then the crossing error (degrees).\n",
        "| SNR | phantom | " + " | ".join(LABELS[mm] for mm in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    raw = {}
    for snr in snrs:
        for name in kinds:
            label, kind, settings = KINDS[name]
            slug = f"{name}-snr{snr:g}"
            ph = simulate_to_dir(out / slug / "phantom", kind=kind, scheme=scheme, snr=snr, seed=seed, size=size,
                                 variation=PhantomVariation(**settings))
            cells = []
            for method in methods:
                seconds, s = run_method(method, ph, out / slug / method.replace("+", "-"), device)
                g = s["groups"]
                raw[f"{slug}/{method}"] = {"seconds": seconds, "success": g["all"]["success_rate"],
                                           "success1": g["1"]["success_rate"], "success2": g["2"]["success_rate"],
                                           "crossing_error": crossing_error(s)}
                cells.append(f"{g['all']['success_rate']:.3f} / {g['1']['success_rate']:.3f} / "
                             f"{g['2']['success_rate']:.3f}, {crossing_error(s):.1f}°")
                logging.getLogger("robustness").warning("%s %s: %s (%.1f s)", slug, method, cells[-1], seconds)
            lines.append(f"| {snr:g} | {label} | " + " | ".join(cells) + " |")
    (out / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/robustness", snrs="20")
    p.add_argument("--scheme", default="clinical")
    p.add_argument("--methods", default=",".join(METHODS))
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
               args.scheme, methods, kinds)
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
