"""Speed of the peak extraction every command runs on its fODF (``shdeconv.direction.sh_peaks``).

On a whole brain, peaks are most of the time ``predict`` spends writing its outputs. This script
extracts them from the fODF ``predict`` writes for the brain phantom of
``benchmarks/wholebrain.py`` (or any ``--fodf``), with the threads ``predict`` gives it (every
core), each arm in its own fresh process, arms alternated over ``--rounds``; with ``--baseline
COMMIT`` also the package as it was at that commit, whose peaks are then compared with this
code's: the fraction of voxels with the same number of peaks, the angle between matched peaks
and their amplitudes' relative difference.

Reported per arm and round: seconds of the first call (which also builds the extraction
sphere's tables) and of a second call on the same fODF.

Usage: python benchmarks/peaks_speed.py [--fodf FILE] [--baseline COMMIT] [--rounds 3]
       [-o bench_out/peaks_speed] [--markdown benchmarks/results/peaks_speed_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import brain_fodf, package_at, publish

logger = logging.getLogger("peaks_speed")


def _arm(fodf: Path, out: Path) -> dict:
    import nibabel as nib
    import numpy as np
    import torch

    from shdeconv.direction import sh_peaks

    sh = np.asarray(nib.load(fodf).dataobj, dtype=np.float32)
    workers = torch.get_num_threads()
    t = time.perf_counter()
    sh_peaks(sh, workers=workers)
    first = time.perf_counter() - t
    t = time.perf_counter()
    dirs, amps = sh_peaks(sh, workers=workers)
    second = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "dirs.npy", dirs)
    np.save(out / "amps.npy", amps)
    voxels = int((sh != 0).any(axis=-1).sum())
    return {"first_s": first, "second_s": second, "workers": workers, "voxels": voxels}


def _agreement(a: Path, b: Path) -> list[str]:
    """How the peaks in folders ``a`` and ``b`` differ, as report lines."""
    import numpy as np

    da, aa = np.load(a / "dirs.npy"), np.load(a / "amps.npy")
    db, ab = np.load(b / "dirs.npy"), np.load(b / "amps.npy")
    na, nb = (aa > 0).sum(-1), (ab > 0).sum(-1)
    live = (na > 0) | (nb > 0)
    same = live & (na == nb)
    both = same[..., None] & (aa > 0)  # peak k present in both, same count: matched by rank
    cos = np.abs(np.einsum("...pc,...pc->...p", da, db))[both]
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    rel = np.abs(aa - ab)[both] / np.maximum(np.abs(aa[both]), 1e-12)
    return [f"- voxels with peaks: {int(live.sum())}; with the same number of peaks: {same.sum() / live.sum():.5f}",
            f"- angle between peaks of the same rank there: median {np.median(ang):.2g}°, 99.9th percentile "
            f"{np.percentile(ang, 99.9):.2g}°, largest {ang.max():.2g}°",
            f"- relative amplitude difference: median {np.median(rel):.2g}, largest {rel.max():.2g}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/peaks_speed"))
    p.add_argument("--fodf", type=Path, default=None, help="an fODF image (default: predict's on the brain phantom)")
    p.add_argument("--shape", default="90,108,90", help="shape of the brain phantom (smaller for a smoke test)")
    p.add_argument("--baseline", help="also time the package at this git commit and compare its peaks")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.fodf is not None and args.shape != "90,108,90":
        p.error("--shape describes the brain phantom: not with --fodf")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.arm:
        print(json.dumps(_arm(args.fodf, args.output)))
        return 0
    fodf = args.fodf
    if fodf is None:
        logger.info("the clinical brain phantom and predict's fODF for it (made once)")
        fodf = brain_fodf(args.output, "clinical", args.shape)[1]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        arms = [("this code", {})] + ([(f"at {args.baseline}", package_at(args.baseline, tmp))]
                                       if args.baseline else [])
        for r in range(args.rounds):
            for name, env in arms:
                out = args.output / ("peaks-" + name.replace(" ", "-"))
                cmd = [sys.executable, __file__, "--arm", "x", "--fodf", str(fodf), "-o", str(out)]
                logger.info("round %d: %s", r + 1, name)
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **env})
                if proc.returncode:
                    raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
                rows.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "arm": name, "round": r + 1,
                             "out": out})
    from shdeconv.evaluation.benchmark import cpu_model

    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; {rows[0]['workers']} extraction threads; "
             f"`{fodf}`, {rows[0]['voxels']} voxels with an fODF.",
             f"Command: `python benchmarks/peaks_speed.py --rounds {args.rounds}"
             + (f" --shape {args.shape}" if args.fodf is None and args.shape != "90,108,90" else "")
             + (f" --baseline {args.baseline}" if args.baseline else "") + "`", "",
             "| round | arm | first call s | second call s |", "|---:|---|---:|---:|"]
    lines += [f"| {r['round']} | {r['arm']} | {r['first_s']:.2f} | {r['second_s']:.2f} |" for r in rows]
    if args.baseline:
        base = f"at {args.baseline}"
        med = {a: statistics.median(r["second_s"] for r in rows if r["arm"] == a) for a in ("this code", base)}
        lines += ["", f"- second call, medians: this code {med['this code']:.2f} s, {base} {med[base]:.2f} s: "
                  f"{med[base] / med['this code']:.2f}x the speed",
                  f"- peaks of this code against those {base}:"]
        lines += ["  " + line for line in _agreement(rows[0]["out"], rows[1]["out"])]
    publish("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
