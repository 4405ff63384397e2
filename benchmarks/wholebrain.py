"""Whole-brain speed: ``shdeconv predict`` (shipped amortized model) vs DIPY CSD on the same volume.

A brain-sized synthetic volume (:func:`shdeconv.sim._brain.brain_phantom`, 90 x 108 x 90 at 2 mm,
~342k brain voxels) in a clinical (b0 + b=1000 x 30) and an HCP-like (b0 + 3 shells x 90) scheme
is written as NIfTI + FSL bvals/bvecs + mask. Each method then runs in its own fresh process on
the same files, one after the other (never concurrently), so that its peak memory (VmHWM)
is its own:

* ``predict``: ``run_predict`` with the shipped model (no fine-tuning) at its defaults: 8^3 tiles
  (its training patch) overlapping by 25%, tiles per batch from free memory and, on CPU, the cache;
* ``predict-overlap0.125``: the same with ``--overlap 0.125`` (a one-voxel overlap of the 8^3
  tiles: fewer tiles, and the score shows what it costs); any ``predict-overlapX`` arm runs at
  overlap ``X`` (``predict-overlap0``: every voxel computed once);
* ``-bf16`` after any ``predict`` arm (on request, e.g. ``predict-bf16``): the same with
  ``--precision bfloat16`` (the network pass in bfloat16; faster where the CPU has bfloat16
  matrix instructions);
* ``predict-auto`` (on request): ``predict --denoise auto``, MP-PCA first where neighbouring
  fibres agree (on a brain it does); its MP-PCA time is in the loading seconds;
* ``fit`` (on request, not by default: 45-60 minutes for a whole brain on 2 cores): ``shdeconv fit`` at its
  defaults (its denoising, MP-PCA on a brain, then ``direct``'s 300 steps from its default start;
  ``--fit-iterations N`` for fewer); its estimator seconds are the steps alone;
* ``csd`` and ``csd-parallel``: ``run_csd`` with DIPY's single-shell CSD (on the highest shell of
  the HCP-like data; DIPY MSMT-CSD, ~80 ms/voxel here, would take hours), serial as DIPY runs by
  default and with DIPY's joblib engine on every core (the baseline at its best).

Throughput counts brain voxels per second of the estimator itself (``timings_s.predict`` /
``timings_s.fit``); the end-to-end seconds are given too, with their two other parts: loading
(reading, masking, response estimation) and writing (NIfTI outputs and peak extraction).
With ``--score`` both outputs are also scored against the phantom's truth.

Usage: python benchmarks/wholebrain.py [--schemes clinical,multishell] [--device cpu|cuda]
       [--score] [-o bench_out/wholebrain] [--markdown benchmarks/results/wholebrain_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import run_job
from _timing import peak_rss_gib

logger = logging.getLogger("wholebrain")
METHODS = ("predict", "predict-overlap0.125", "csd", "csd-parallel")
DIPY_ARMS = ("csd", "csd-parallel")
BF16 = "-bf16"  # suffix of a predict arm run with --precision bfloat16


def predict_overlap(method: str) -> float | None:
    """Tile overlap of a ``predict`` arm (``predict``: the default, ``predict-overlapX``: X, either
    with the ``-bf16`` suffix), else None."""
    method = method.removesuffix(BF16)
    if method == "predict":
        from shdeconv.inference import DEFAULT_TILE_OVERLAP

        return DEFAULT_TILE_OVERLAP
    if method.startswith("predict-overlap"):
        try:
            value = float(method[len("predict-overlap"):])
        except ValueError:
            return None
        return value if 0.0 <= value < 1.0 else None
    return None


def _arm(method: str, data: Path, out: Path, device: str, model: Path | None, fit_iterations: int | None) -> dict:
    from shdeconv.fitting import run_csd, run_predict

    inputs = (data / "dwi.nii.gz", data / "bvals", data / "bvecs")
    t = time.perf_counter()
    if predict_overlap(method) is not None or method == "predict-auto":
        overlap = predict_overlap("predict" if method == "predict-auto" else method)
        report = run_predict(*inputs, out, mask=data / "mask.nii.gz", model=model, device=device, progress=False,
                             overlap=overlap, denoise="auto" if method == "predict-auto" else "none",
                             precision="bfloat16" if method.endswith(BF16) else "float32", force=True)
        core = report["timings_s"]["predict"]
        extra = {"tile": report["tile"], "overlap": report["overlap"], "tiles_per_batch": report["tiles_per_batch"],
                 "tile_workers": report["tile_workers"], "denoise": report["denoise"],
                 "precision": report["precision"]}
        if device != "cpu":
            import torch

            if torch.cuda.is_available():
                extra["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    elif method == "fit":
        core, report = run_job("fit", data, out, mask=data / "mask.nii.gz", device=device, iterations=fit_iterations)
        extra = {"start": report["start"], "denoise": report["denoise"], "iterations": report["direct"]["iterations"]}
    else:
        n_jobs = -1 if method == "csd-parallel" else 1
        report = run_csd(*inputs, out, mask=data / "mask.nii.gz", algorithm="ssst", n_jobs=n_jobs, force=True)
        core, extra = report["timings_s"]["fit"], {}
    wall = time.perf_counter() - t
    extra.update(load_s=report["timings_s"]["load"], write_s=report["timings_s"]["write"],
                 stages=report.get("stage_seconds", {}))
    return {"method": method, "voxels": report["voxels_in_mask"], "core_s": core, "total_s": wall,
            "peak_rss_gib": peak_rss_gib(), **extra}


def stage_table(rows: list[dict]) -> list[str]:
    """Markdown lines of where each arm's loading and writing went (its report's
    ``stage_seconds``), beside the estimator; the stages in the order they ran."""
    parts = {"load": [], "write": []}
    for r in rows:
        for part, names in parts.items():
            names += [n for n in r.get("stages", {}).get(part, {}) if n not in names]
    if not parts["load"] and not parts["write"]:
        return []
    cols = [("load", n) for n in parts["load"]] + [("estimator", "")] + [("write", n) for n in parts["write"]]
    head = [f"{part}: {name.replace('_', ' ')}" if name else "estimator" for part, name in cols]
    out = ["", "Where the time goes (seconds, from each arm's `report.json` `stage_seconds`; the NIfTI files are "
           "written in the background, so `write: nifti after the rest` is only what they took beyond the peaks "
           "and the QC figure):", "",
           "| scheme | method | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(cols)]
    for r in rows:
        st = r.get("stages", {})
        cells = [f"{r['core_s']:.1f}" if part == "estimator" else
                 (f"{st[part][name]:.1f}" if name in st.get(part, {}) else "-") for part, name in cols]
        out.append(f"| {r['scheme']} | {r['method']} | " + " | ".join(cells) + " |")
    return out


def _machine() -> str:
    import torch

    from shdeconv.evaluation.benchmark import cpu_model

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    threads = torch.get_num_threads()
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), GPU: {gpu}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/wholebrain"))
    p.add_argument("--schemes", default="clinical,multishell")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated arms among " + ",".join(METHODS)
                   + ",fit, predict-auto and predict-overlapX (X in [0, 1)); -bf16 after a predict arm: bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", default="90,108,90", help="volume shape (smaller for a smoke test)")
    p.add_argument("--model", type=Path, default=None, help="model for predict (default: the shipped one)")
    p.add_argument("--score", action="store_true", help="also score both outputs against the truth")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--fit-iterations", type=int, default=None,
                   help="steps of the fit arm (default: fit's own, 300; fewer for a smoke test)")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if not methods or any(m not in DIPY_ARMS + ("fit", "predict-auto") and predict_overlap(m) is None for m in methods):
        p.error(f"--methods must be comma-separated arms among {','.join(METHODS)},fit,predict-auto and "
                f"predict-overlapX (X in [0, 1)), each predict arm optionally with -bf16, got {args.methods!r}")
    if args.fit_iterations is not None and args.fit_iterations < 1:
        p.error(f"--fit-iterations must be >= 1, got {args.fit_iterations}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.arm:  # child process: one method, JSON on stdout
        print(json.dumps(_arm(args.arm, args.data, args.output, args.device, args.model, args.fit_iterations)))
        return 0

    from shdeconv.evaluation import evaluate_dirs
    from shdeconv.sim import write_phantom
    from shdeconv.sim._brain import brain_phantom

    rows = []
    for scheme in args.schemes.split(","):
        data = args.output / f"data-{scheme}"
        if not (data / "truth" / "truth.json").exists():
            logger.info("simulating the %s brain volume", scheme)
            shape = tuple(int(v) for v in args.shape.split(","))
            write_phantom(brain_phantom(shape, scheme=scheme, seed=args.seed), data)
        for method in methods:
            out = args.output / f"{scheme}-{method}"
            cmd = [sys.executable, __file__, "--arm", method, "--data", str(data), "-o", str(out),
                   "--device", args.device] + (["--model", str(args.model)] if args.model else []) \
                + (["--fit-iterations", str(args.fit_iterations)] if args.fit_iterations else [])
            logger.info("running %s on %s", method, scheme)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"{method} on {scheme} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["scheme"] = scheme
            if args.score:
                s = evaluate_dirs(out, data)
                row.update(success=s["groups"]["all"]["success_rate"], ae=s["groups"]["all"]["angular_error_mean"],
                           success2=s["groups"]["2"]["success_rate"])
            rows.append(row)
            logger.info("%s", row)
    gpu = any("gpu_peak_gib" in r for r in rows)
    lines = [f"Machine: {_machine()}; device for predict: {args.device}.",
             f"Command: `python benchmarks/wholebrain.py --schemes {args.schemes} --device {args.device} "
             f"--shape {args.shape}" + ("" if methods == list(METHODS) else f" --methods {args.methods}")
             + (f" --fit-iterations {args.fit_iterations}" if args.fit_iterations else "")
             + (" --score" if args.score else "") + "`", "",
             "| scheme | method | brain voxels | estimator s | voxels/s | load s | write s | end-to-end s | peak RSS GiB |"
             + (" GPU peak GiB |" if gpu else "") + (" success | AE (°) | 2-fibre success |" if args.score else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else "") + ("---:|---:|---:|" if args.score else "")]
    for r in rows:
        line = (f"| {r['scheme']} | {r['method']} | {r['voxels']} | {r['core_s']:.1f} | "
                f"{r['voxels'] / r['core_s']:.0f} | {r['load_s']:.1f} | {r['write_s']:.1f} | {r['total_s']:.1f} | "
                f"{r['peak_rss_gib']:.2f} |")
        if gpu:
            line += f" {r['gpu_peak_gib']:.2f} |" if "gpu_peak_gib" in r else " - |"
        if args.score:
            line += f" {r['success']:.3f} | {r['ae']:.2f} | {r['success2']:.3f} |"
        lines.append(line)
    by = {(r["scheme"], r["method"]): r for r in rows}
    lines.append("")
    for scheme in args.schemes.split(","):
        dipy_arms = [by[(scheme, m)] for m in methods if m in DIPY_ARMS]
        if not dipy_arms:
            continue
        best = max(dipy_arms, key=lambda r: r["voxels"] / r["core_s"])
        for arm in (m for m in methods if m not in DIPY_ARMS):
            a = by[(scheme, arm)]
            ratio = (a["voxels"] / a["core_s"]) / (best["voxels"] / best["core_s"])
            lines.append(f"- {scheme}: {arm} throughput = {ratio:.2f} x that of DIPY {best['method']} "
                         "(the faster DIPY arm; same run, same volume)")
    lines += stage_table(rows)
    text = "\n".join(lines) + "\n"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(text)
    (args.output / "results.json").write_text(json.dumps(rows, indent=2))
    if args.markdown:
        args.markdown.write_text("# Whole-brain speed (`benchmarks/wholebrain.py`)\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
