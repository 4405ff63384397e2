"""Tile overlap and tile size of ``predict``: accuracy against seconds on held-out phantoms.

``predict`` runs the shipped model on 8^3 tiles (its training patch) and blends the tiles'
outputs where they overlap. More overlap computes every voxel more often (about
``(1 / (1 - overlap))^3`` times before edge pruning) and averages more tiles per voxel.
This script measures what that buys: spatial bundle phantoms (seed 0 by default; the
model was trained on seeds 1000+) in every training-like scheme at each SNR, ``predict`` at
each overlap on the same phantom, one after the other (the order rotates from phantom to
phantom so that a slow spell of the machine does not land on one setting), scored
identically (``shdeconv evaluate``). Seconds are ``timings_s.predict`` (the network on the
tiles), summed over phantoms and given as a ratio to the default overlap's sum.

``--tiles`` adds larger tiles than the training patch (``--patch-size``), each with the
default's 2-voxel overlap (0.25 of 8): fewer voxels are computed twice, and the table shows
what a network trained on 8^3 patches makes of a tile it never saw.

Usage: python benchmarks/tile_overlap.py [-o bench_out/overlap] [--overlaps 0,0.125,0.25,0.5]
       [--tiles 12,16] [--markdown benchmarks/results/tile_overlap_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from _report import SCORE_KEYS, add_phantom_options, mean_score_cells, publish, score_cells, score_values

SCHEMES = ("sparse", "clinical", "multishell")


TRAINING_TILE = 8  # the shipped model's training patch


def run(out: Path, schemes: list[str], snrs: list[float], overlaps: list[float], seed: int, size: str,
        device: str, tiles: tuple[int, ...] = ()) -> str:
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.fitting import run_predict
    from shdeconv.inference import DEFAULT_TILE_OVERLAP
    from shdeconv.sim import simulate_to_dir

    if DEFAULT_TILE_OVERLAP not in overlaps:
        overlaps = sorted(overlaps + [DEFAULT_TILE_OVERLAP])
    margin = DEFAULT_TILE_OVERLAP * TRAINING_TILE  # voxels
    settings = [(TRAINING_TILE, ov) for ov in overlaps] + [(t, margin / t) for t in tiles]
    default = (TRAINING_TILE, DEFAULT_TILE_OVERLAP)
    per = {st: {"seconds": 0.0, "scores": []} for st in settings}
    cell_rows = []
    for i, (scheme, snr) in enumerate((s, n) for s in schemes for n in snrs):
        ph = simulate_to_dir(out / f"{scheme}-snr{snr:g}" / "phantom", scheme=scheme, snr=snr, seed=seed, size=size)
        order = settings[i % len(settings):] + settings[: i % len(settings)]
        for tile, ov in order:
            dest = ph.parent / (f"predict-overlap{ov:g}" if tile == TRAINING_TILE else f"predict-tile{tile}")
            report = run_predict(ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs", dest, mask=ph / "mask.nii.gz",
                                 device=device, tile=tile, overlap=ov, progress=False, force=True)
            values = score_values(dest, ph)
            per[(tile, ov)]["seconds"] += report["timings_s"]["predict"]
            per[(tile, ov)]["scores"].append(values)
            cell_rows.append((scheme, snr, tile, ov, report["timings_s"]["predict"], values))
    m = machine_info(device)
    base = per[default]["seconds"]
    lines = [
        "# Tile overlap and size of `predict` (`benchmarks/tile_overlap.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
         f"torch {m['torch']}, shdeconv {m['shdeconv']}. Spatial bundle phantoms, seed {seed}, size {size}, "
         f"schemes {', '.join(schemes)}, SNR {', '.join(f'{s:g}' for s in snrs)}; the shipped model "
         f"(trained on {TRAINING_TILE}^3 patches).\n"),
        (f"Mean over the {len(schemes) * len(snrs)} phantoms; seconds relative to the default "
         f"({TRAINING_TILE}^3 tiles, overlap {DEFAULT_TILE_OVERLAP:g}), summed over the same phantoms in the same "
         "run.\n"),
        "| tile | overlap | seconds (x default) | " + " | ".join(SCORE_KEYS) + " |",
        "|---:|---:|---:|" + "---:|" * len(SCORE_KEYS),
    ]
    for tile, ov in settings:
        lines.append(f"| {tile} | {ov:.3g} | {per[(tile, ov)]['seconds'] / base:.2f} | "
                     f"{mean_score_cells(per[(tile, ov)]['scores'])} |")
    lines += ["", "## Per phantom\n", "| scheme | SNR | tile | overlap | seconds | " + " | ".join(SCORE_KEYS) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(SCORE_KEYS)]
    for scheme, snr, tile, ov, sec, values in sorted(cell_rows, key=lambda r: (r[0], r[1], r[2], r[3])):
        lines.append(f"| {scheme} | {snr:g} | {tile} | {ov:.3g} | {sec:.2f} | {score_cells(values)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/overlap", snrs="10,20,30")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--overlaps", default="0,0.125,0.25,0.5")
    p.add_argument("--tiles", default="12,16", help="larger tile sides, each at a 2-voxel overlap ('' for none)")
    args = p.parse_args(argv)
    overlaps = sorted({float(v) for v in args.overlaps.split(",")})
    if any(not 0.0 <= v < 1.0 for v in overlaps):
        p.error(f"--overlaps must lie in [0, 1), got {args.overlaps!r}")
    logging.basicConfig(level=logging.WARNING)
    text = run(args.output, args.schemes.split(","), [float(s) for s in args.snrs.split(",")], overlaps,
               args.seed, args.size, args.device, tuple(int(t) for t in args.tiles.split(",") if t))
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
