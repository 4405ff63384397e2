"""Forward throughput of the shipped model vs tiles per pass and Chebyshev mode (why ``auto_batch`` keeps CPU batches small).

For each number of 8^3 tiles per forward pass, the shipped network predicts random signals in
eval mode without gradients, with the sparse Chebyshev recursion (the training setting) and
with the dense projector plus the coarse-grid decoder convolution (what ``predict`` uses), and
on a CPU with more than one torch thread also with ``tile_workers`` worker threads sharing
torch's threads (what ``predict`` runs there).
Voxels per second count every tile voxel (no overlap, no mask), best of ``--repeats`` timed
rounds after a warm-up, all in this one process. The last line says what ``auto_batch``
chooses on this machine.

Usage: python benchmarks/predict_batch.py [--batches 1,2,4,8,16,64] [--repeats 3]
       [--markdown benchmarks/results/predict_batch_cpu.md]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from shdeconv.evaluation.benchmark import cpu_model
from shdeconv.inference import auto_batch, threads_per_worker, tile_workers
from shdeconv.models._store import load_model, pretrained_path

TILE = 8
GRADIENTS = 31  # clinical scheme: 1 b=0 + 30 directions


def throughput(net, batch: int, repeats: int, seconds: float = 1.0, device: str = "cpu", workers: int = 1) -> float:
    """Best voxels/s over ``repeats`` rounds of at least ``seconds`` each (GPU work synchronised).

    With ``workers > 1`` that many threads run passes at once, sharing torch's threads
    (what ``predict`` does on a CPU: ``shdeconv.inference.tile_workers``).
    """
    x = torch.randn(batch, GRADIENTS, TILE, TILE, TILE).to(device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def passes(t0: float) -> int:
        n = 0
        with torch.no_grad():  # per thread
            while True:
                net(x)
                n += 1
                sync()
                if time.perf_counter() - t0 >= seconds:
                    return n

    best = 0.0
    with threads_per_worker(workers, torch.device(device)):
        with torch.no_grad():
            net(x)
            sync()
        with ThreadPoolExecutor(workers) as pool:
            for _ in range(repeats):
                t0 = time.perf_counter()
                n = sum(pool.map(passes, [t0] * workers))
                best = max(best, n * batch * TILE**3 / (time.perf_counter() - t0))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4,8,16,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net, _ = load_model(pretrained_path())
    net.to(args.device).eval()
    rng = np.random.default_rng(0)
    net.set_init_matrix(0.1 * rng.standard_normal((net.n_coeffs + net.n_iso, GRADIENTS)).astype(np.float32))
    batches = [int(b) for b in args.batches.split(",")]
    rows = {}
    for mode in ("sparse", "dense"):
        net.chebyshev = mode
        rows[mode] = [throughput(net, b, args.repeats, device=args.device) for b in batches]
    workers = tile_workers(torch.device(args.device))
    if workers > 1:  # what predict runs on a CPU
        rows["workers"] = [throughput(net, b, args.repeats, device=args.device, workers=workers) for b in batches]
    chosen = auto_batch(net, torch.device(args.device), TILE)
    gpu = f", GPU: {torch.cuda.get_device_name(0)}" if torch.device(args.device).type == "cuda" else ""
    lines = [(f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads){gpu}; device: {args.device}."),
             f"Command: `python benchmarks/predict_batch.py --batches {args.batches} --device {args.device}`", "",
             "| Chebyshev mode | " + " | ".join(f"{b} tiles" for b in batches) + " |",
             "|---|" + "---:|" * len(batches)]
    labels = {"sparse": "sparse recursion (training setting)",
              "dense": "dense projector + coarse-grid decoder",
              "workers": f"dense, {workers} tile workers x {torch.get_num_threads() // workers} thread(s) (predict)"}
    if workers == 1:
        labels["dense"] += " (predict)"
    for mode, vals in rows.items():
        lines.append(f"| {labels[mode]} | " + " | ".join(f"{v:.0f}" for v in vals) + " |")
    best = max(max(zip(rows[m], batches)) + (m,) for m in rows if m != "sparse")
    lines += ["", "Voxels/s of 8^3 tiles through the shipped model (every tile voxel counted, all workers together).",
              (f"Fastest: {best[1]} tiles per pass ({best[0]:.0f} voxels/s, {labels[best[2]]}); "
               f"`auto_batch` chooses {chosen} per pass for each of {workers} tile worker(s) on this machine.")]
    text = "\n".join(lines) + "\n"
    if args.markdown:
        args.markdown.write_text("# Tiles per forward pass (`benchmarks/predict_batch.py`)\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
