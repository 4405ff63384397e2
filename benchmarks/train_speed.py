"""Training throughput of ``shdeconv train``: float32 vs ``--amp`` (bfloat16 autocast) per batch size.

The shipped network's configuration (``shd-tv-amortized``) is trained from scratch on three
simulated subjects (sparse, clinical and multi-shell schemes, SNR 20) exactly as ``shdeconv
train`` does it: one subject and ``batch`` patches of 8^3 voxels per step, the unsupervised
loss plus the supervised term, Adam, gradient clipping. Each arm runs ``--warmup`` steps that
are not counted and then ``--steps`` timed ones; the table gives the median over the timed steps
of the training log's own numbers (seconds per step, brain voxels per second), all arms in this
one process. ``--amp`` needs CUDA, so on a CPU only float32 is measured.

Usage: python benchmarks/train_speed.py [--device cuda] [--batches 4,16] [--steps 40]
       [--markdown benchmarks/results/train_speed_gpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from _report import publish

from shdeconv.evaluation.benchmark import cpu_model
from shdeconv.losses import LossWeights
from shdeconv.models import NetworkConfig
from shdeconv.models._store import pretrained_path
from shdeconv.sim import simulate_to_dir
from shdeconv.training import TrainConfig, train

SCHEMES = ("sparse", "clinical", "multishell")


def shipped_config() -> tuple[NetworkConfig, LossWeights]:
    """The network configuration and loss weights recorded next to the shipped weights."""
    meta = json.loads(pretrained_path().with_suffix(".json").read_text())
    return NetworkConfig(**meta["net_config"]), LossWeights(**meta["loss_weights"])


def run_arm(subjects, out: Path, cache: Path, *, batch: int, amp: bool, warmup: int, steps: int,
            device: str) -> dict:
    """Train one arm; medians over the timed steps of its ``train_log.jsonl``."""
    net_config, weights = shipped_config()
    cfg = TrainConfig(iterations=warmup + steps, batch_size=batch, seed=0, log_every=1,
                      checkpoint_every=warmup + steps, amp=amp)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train(subjects, out, net_config=net_config, weights=weights, config=cfg, device=device, progress=False,
          cache_dir=cache, force=True)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    timed = [r for r in log if "iteration" in r][warmup:]
    return {"batch": batch, "amp": amp, "steps": len(timed),
            "s_per_step": statistics.median(r["seconds"] for r in timed),
            "voxels_per_s": statistics.median(r["voxels_per_s"] for r in timed),
            "first_loss": log[-1]["first_loss"], "last_loss": log[-1]["last_loss"],
            "gpu_peak_gib": (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None)}


def report(rows: list[dict], command: str, device: str) -> str:
    gpu = f", GPU: {torch.cuda.get_device_name(0)}" if device.startswith("cuda") else ""
    machine = (f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads){gpu}; device: {device}.")
    header = "| patches per step | precision | s per step | brain voxels/s | x float32 | loss first -> last | GPU peak GiB |"
    lines = [machine, f"Command: `{command}`", "", header, "|---:|---|---:|---:|---:|---|---:|"]
    base = {r["batch"]: r["voxels_per_s"] for r in rows if not r["amp"]}
    for r in rows:
        peak = "-" if r["gpu_peak_gib"] is None else f"{r['gpu_peak_gib']:.2f}"
        lines.append(f"| {r['batch']} | {'bfloat16 autocast' if r['amp'] else 'float32'} | {r['s_per_step']:.4f} "
                     f"| {r['voxels_per_s']:.0f} | {r['voxels_per_s'] / base[r['batch']]:.2f} "
                     f"| {r['first_loss']:.3f} -> {r['last_loss']:.3f} | {peak} |")
    lines += ["", ("Medians over the timed steps (warm-up steps excluded); voxels count the brain-mask voxels of "
                   "the sampled patches, as the training log does.")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batches", default="4,16", help="patches per step, comma-separated")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", default="default", choices=["default", "quick"], help="phantom size")
    p.add_argument("-o", "--output", type=Path, default=Path("train_speed_out"))
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be positive and --warmup non-negative")
    subjects = [simulate_to_dir(args.output / f"data-{s}", scheme=s, snr=20, seed=i, size=args.size)
                for i, s in enumerate(SCHEMES)]
    precisions = (False, True) if args.device.startswith("cuda") else (False,)
    rows = [run_arm(subjects, args.output / f"b{b}-{'amp' if amp else 'fp32'}", args.output / "cache", batch=b,
                    amp=amp, warmup=args.warmup, steps=args.steps, device=args.device)
            for b in (int(x) for x in args.batches.split(",")) for amp in precisions]
    command = ("python benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    publish("# Training throughput (`benchmarks/train_speed.py`)\n\n" + report(rows, command, args.device),
            args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
