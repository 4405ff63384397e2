"""Speed and memory of a whole-volume ``fit`` (``direct``) step on a CPU.

``fit`` minimises the published objective over every mask voxel at once (in blocks of
``DirectConfig.chunk_voxels``, by default small ones on a CPU); its non-negativity and sparsity
terms evaluate the fODF on the 1536-point dense grid, in blocks of ``GRID_BLOCK_ROWS`` voxels.
This script times the same fit on a
brain-shaped phantom (:func:`shdeconv.sim._brain.brain_phantom`) with those terms evaluated in
blocks of ``GRID_BLOCK_ROWS`` voxels (the default) and in one block (the whole slab at once),
each arm in its own fresh process, the arms alternated over ``--rounds``; with ``--baseline
COMMIT``, also the package as it was at that git commit (its ``src/`` exported to a temporary
folder and put first on ``PYTHONPATH``); and, with
``--allocator``, both again with glibc told never to return freed memory to the system
(``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` at 1 GiB: an upper bound on what the
page faults of fresh allocations still cost, not something ``fit`` does).

Reported per arm: seconds of the steps (``timings_s.fit``; the start is the linear one, so that
no network runs), the
process's system and user CPU seconds, its peak RSS, and the final loss (equal across arms:
the blocks change the order of a sum, not the objective).

Usage: python benchmarks/direct_speed.py [--shape 60,72,60] [--iterations 8] [--rounds 2]
       [--baseline COMMIT] [--allocator] [-o bench_out/direct_speed] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import package_at, publish
from _timing import peak_rss_gib

logger = logging.getLogger("direct_speed")
ARMS = ("blocked", "one-block")
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def _arm(arm: str, data: Path, out: Path, iterations: int, device: str) -> dict:
    import torch

    import shdeconv
    from shdeconv.fitting import DirectConfig, run_fit
    from shdeconv.losses import _losses

    if arm == "one-block":
        _losses.GRID_BLOCK_ROWS = 1 << 40
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    report = run_fit(data / "dwi.nii.gz", data / "bvals", data / "bvecs", out, mask=data / "mask.nii.gz",
                     progress=False, force=True, denoise="none", device=device,
                     direct_config=DirectConfig(iterations=iterations, init="linear", checkpoint_every=10**6))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"arm": arm, "voxels": report["voxels_in_mask"], "fit_s": report["timings_s"]["fit"],
            "device": report["device"], "sys_s": r1.ru_stime - r0.ru_stime, "user_s": r1.ru_utime - r0.ru_utime,
            "peak_rss_gib": peak_rss_gib(), "gpu_peak_gib": gpu, "loss": report["loss_curve"][-1]["loss"],
            "threads": torch.get_num_threads(), "package": str(Path(shdeconv.__file__).parent)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/direct_speed"))
    p.add_argument("--shape", default="60,72,60", help="volume shape of the brain phantom")
    p.add_argument("--scheme", default="clinical")
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--arms", default=",".join(ARMS), help="some of " + ",".join(ARMS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline", help="also time the package at this git commit")
    p.add_argument("--allocator", action="store_true", help="also run both arms with glibc's trimming off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    chosen = [a for a in args.arms.split(",") if a]
    if not chosen or any(a not in ARMS for a in chosen):
        p.error(f"--arms must be some of {','.join(ARMS)}, got {args.arms!r}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.arm:
        print(json.dumps(_arm(args.arm, args.data, args.output, args.iterations, args.device)))
        return 0

    from shdeconv.sim import write_phantom
    from shdeconv.sim._brain import brain_phantom

    data = args.output / f"data-{args.scheme}-{args.shape.replace(',', 'x')}"
    if not (data / "mask.nii.gz").exists():
        shape = tuple(int(v) for v in args.shape.split(","))
        write_phantom(brain_phantom(shape, scheme=args.scheme, seed=args.seed), data)
    envs = [("", {})] + ([(" + glibc trimming off", ALLOCATOR_ENV)] if args.allocator else [])
    arms = [(arm, {}) for arm in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            arms.append((f"blocked at {args.baseline}", package_at(args.baseline, tmp)))
        rows = []
        for r in range(args.rounds):
            for label, env in envs:
                for name, arm_env in arms:
                    arm = name.split(" ")[0]
                    cmd = [sys.executable, __file__, "--arm", arm, "--data", str(data),
                           "-o", str(args.output / name.replace(" ", "-")), "--iterations", str(args.iterations),
                           "--device", args.device]
                    logger.info("round %d: %s%s", r + 1, name, label)
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                          env={**os.environ, **env, **arm_env})
                    if proc.returncode:
                        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    rows.append({**row, "arm": name + label, "round": r + 1})
    from shdeconv.evaluation.benchmark import cpu_model

    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, "
             f"torch threads {rows[0]['threads']}, device {rows[0]['device']}; phantom {args.shape} {args.scheme}, "
             f"{rows[0]['voxels']} mask voxels, {args.iterations} steps.",
             f"Command: `python benchmarks/direct_speed.py --shape {args.shape} --scheme {args.scheme} "
             f"--iterations {args.iterations} --rounds {args.rounds}"
             + ("" if chosen == list(ARMS) else f" --arms {args.arms}")
             + ("" if args.device == "cpu" else f" --device {args.device}")
             + (f" --baseline {args.baseline}" if args.baseline else "")
             + (" --allocator" if args.allocator else "") + "`",
             "", "| round | arm | steps s | s / step | system CPU s | user CPU s | peak RSS GiB | final loss |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['round']} | {r['arm']} | {r['fit_s']:.1f} | {r['fit_s'] / args.iterations:.2f} | "
              f"{r['sys_s']:.1f} | {r['user_s']:.1f} | {r['peak_rss_gib']:.2f} | {r['loss']:.6g} |" for r in rows]
    lines += [f"- round {r['round']}, {r['arm']}: GPU peak {r['gpu_peak_gib']:.2f} GiB"
              for r in rows if r["gpu_peak_gib"]]
    lines.append("")
    for r in range(1, args.rounds + 1) if "blocked" in chosen else ():
        for label, _ in envs:
            a = next(x for x in rows if x["round"] == r and x["arm"] == "blocked" + label)
            b = next((x for x in rows if x["round"] == r and x["arm"] == "one-block" + label), None)
            if b:
                lines.append(f"- round {r}{label}: blocked = {b['fit_s'] / a['fit_s']:.2f}x the speed of one block")
            if args.baseline:
                c = next(x for x in rows if x["round"] == r and x["arm"] == f"blocked at {args.baseline}{label}")
                lines.append(f"- round {r}{label}: this code = {c['fit_s'] / a['fit_s']:.2f}x the speed of "
                             f"{args.baseline}")
    publish("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
