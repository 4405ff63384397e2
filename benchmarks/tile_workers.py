"""Tile workers on a CPU: ``predict``'s network phase with ``tile_workers`` threads sharing torch's threads vs one worker.

The brain-sized phantom of ``benchmarks/wholebrain.py`` (simulated into ``-o`` unless already
there) is loaded once; then the shipped model predicts it with ``predict_volume`` alternately
(a) as before: one worker whose passes use all torch threads, with ``auto_batch``'s batch for
one worker, and (b) as ``predict`` now runs: ``tile_workers`` workers sharing the torch
threads, with ``auto_batch``'s batch for them. Rounds alternate a, b in the same process, so both see the
same machine load; the table gives each round's seconds, their ratio and the largest
difference between the two outputs.

Usage: python benchmarks/tile_workers.py [--scheme clinical] [--shape 90,108,90] [--repeats 2]
       [-o bench_out/wholebrain] [--markdown benchmarks/results/tile_workers_cpu.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _report import publish

from shdeconv.evaluation.benchmark import cpu_model
from shdeconv.fitting import load_subject
from shdeconv.fitting._subject import attach_subject
from shdeconv.inference import auto_batch, predict_volume, tile_workers
from shdeconv.models._store import load_model, pretrained_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/wholebrain"))
    p.add_argument("--scheme", default="clinical")
    p.add_argument("--shape", default="90,108,90")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    cpu = torch.device("cpu")
    workers = tile_workers(cpu)
    if workers < 2:
        p.error(f"torch has {torch.get_num_threads()} thread(s): nothing to compare (set OMP_NUM_THREADS >= 2)")
    data = args.output / f"data-{args.scheme}"
    if not (data / "truth" / "truth.json").exists():
        from shdeconv.sim import write_phantom
        from shdeconv.sim._brain import brain_phantom

        write_phantom(brain_phantom(tuple(int(v) for v in args.shape.split(",")), scheme=args.scheme,
                                    seed=args.seed), data)
    net, _ = load_model(args.model or pretrained_path())
    subject = load_subject(data / "dwi.nii.gz", data / "bvals", data / "bvecs", data / "mask.nii.gz",
                           lmax=net.config.response_lmax, keep_raw=False)
    attach_subject(net, subject)
    arms = {"one worker": (1, auto_batch(net, cpu, 8, workers=1)),
            f"{workers} workers x {torch.get_num_threads() // workers} thread(s)":
                (workers, auto_batch(net, cpu, 8, workers=workers))}
    rows = []
    for r in range(args.repeats):
        seconds, outs = {}, {}
        for name, (w, batch) in arms.items():
            t0 = time.perf_counter()
            outs[name] = predict_volume(net, subject.signal, subject.mask, tile=8, overlap=0.25, device=cpu,
                                        sw_batch_size=batch, workers=w)[0]
            seconds[name] = time.perf_counter() - t0
        a, b = arms
        rows.append((r + 1, seconds[a], seconds[b], seconds[a] / seconds[b],
                     float(np.abs(outs[a] - outs[b]).max() / np.abs(outs[a]).max())))
    names = list(arms)
    lines = [(f"Machine: {cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
             f"{args.scheme} brain phantom {args.shape}, {int(subject.mask.sum())} brain voxels, 8^3 tiles, 25% overlap."),
             (f"Command: `python benchmarks/tile_workers.py --scheme {args.scheme} --shape {args.shape} "
             f"--repeats {args.repeats}`"), "",
             (f"| round | {names[0]} (batch {arms[names[0]][1]}) s | {names[1]} (batch {arms[names[1]][1]}) s "
             "| speed-up | max abs difference / max abs |"), "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r} | {a:.1f} | {b:.1f} | {q:.2f}x | {d:.1e} |" for r, a, b, q, d in rows]
    publish("# Tile workers (`benchmarks/tile_workers.py`)\n\n" + "\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
