"""``predict --precision bfloat16`` against float32: accuracy, agreement and network seconds.

The shipped model predicts the same held-out phantoms (seed 0 by default; the model was
trained on seeds 1000+) in float32 and in bfloat16 (``DeconvNet.precision``: the U-Nets'
weights and activations in bfloat16, the linear deconvolution, gate and head in float32),
one after the other in this process (the order alternates from phantom to phantom), and both
outputs are scored alike (``shdeconv evaluate``). Spatial bundle phantoms in every
training-like scheme at each SNR, plus voxel-wise crossing phantoms (``--voxelwise``, whose
voxels take the gated model's voxel-wise path). Besides the scores, the table gives how far
the bfloat16 fODF is from the float32 one (relative L2 difference over the mask) and the
angle from the bfloat16 first peak to the nearest float32 peak. Seconds are
``timings_s.predict`` (the network on the tiles), summed over phantoms; on these small
phantoms fixed costs weigh more than on a whole brain (``benchmarks/wholebrain.py``'s
``-bf16`` arms). The speed-up depends on the CPU (``native bfloat16`` in the header: whether
it has bfloat16 matrix instructions).

``--volume DIR`` (a phantom folder with ``dwi.nii.gz``, ``bvals``, ``bvecs`` and
``mask.nii.gz``, e.g. the whole-brain volume ``benchmarks/wholebrain.py`` writes) adds the
network phase alone on that volume (``predict_volume`` at ``predict``'s defaults, the input
computed once): float32 and bfloat16 at the tiles per pass ``auto_batch`` chooses for each,
and bfloat16 at float32's batch, alternating for ``--rounds`` rounds in this process: on
a shared machine whose speed drifts, the median of alternating runs is the fair ratio. A
last table profiles one pass of the network in each precision (torch profiler, one thread).

Usage: python benchmarks/precision.py [-o bench_out/precision] [--snrs 10,20,30]
       [--volume bench_out/wholebrain/data-clinical --rounds 3]
       [--markdown benchmarks/results/precision_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from _report import SCORE_KEYS, add_phantom_options, format_score, mean_score_cells, publish, score_values

from shdeconv._options import PRECISIONS

SCHEMES = ("sparse", "clinical", "multishell")


def _peaks(outdir: Path) -> np.ndarray:
    """``[X, Y, Z, 3, 3]`` peaks (NaN where absent)."""
    p = np.asarray(nib.load(str(outdir / "peaks.nii.gz")).dataobj, dtype=np.float64)
    return p.reshape(p.shape[:3] + (-1, 3))


def agreement(a: Path, b: Path, mask: np.ndarray) -> tuple[float, float, float]:
    """Relative L2 difference of ``b``'s fODF from ``a``'s over ``mask``, and the median and 99th
    percentile angle (degrees) from ``b``'s first peak to the nearest of ``a``'s peaks (where
    two fibres are nearly equal, rounding may swap which is first)."""
    fa, fb = (np.asarray(nib.load(str(d / "fodf.nii.gz")).dataobj, dtype=np.float64)[mask] for d in (a, b))
    rel = float(np.linalg.norm(fb - fa) / np.linalg.norm(fa))
    pa, pb = _peaks(a)[mask], _peaks(b)[mask][:, 0]
    ua = pa / np.linalg.norm(pa, axis=-1, keepdims=True)
    ub = pb / np.linalg.norm(pb, axis=-1, keepdims=True)
    ok = np.isfinite(ub).all(-1) & np.isfinite(ua[:, 0]).all(-1)  # both have a first peak
    cos = np.abs(np.einsum("npk,nk->np", np.nan_to_num(ua[ok], nan=0.0), ub[ok])).max(axis=1)
    angles = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    return rel, float(np.median(angles)), float(np.percentile(angles, 99))


def run(out: Path, cells: list[tuple[str, str, float]], seed: int, size: str, device: str) -> str:
    import torch

    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.fitting import run_predict
    from shdeconv.inference import native_bfloat16
    from shdeconv.models import LoadedModel
    from shdeconv.sim import simulate_to_dir

    model = LoadedModel.load(None)
    per = {p: {"seconds": 0.0, "scores": []} for p in PRECISIONS}
    rows = []
    for i, (kind, scheme, snr) in enumerate(cells):
        ph = simulate_to_dir(out / f"{kind}-{scheme}-snr{snr:g}" / "phantom", kind=kind, scheme=scheme, snr=snr,
                             seed=seed, size=size)
        scores, seconds = {}, {}
        for precision in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
            dest = ph.parent / f"predict-{precision}"
            report = run_predict(ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs", dest, mask=ph / "mask.nii.gz",
                                 model=model, device=device, progress=False, precision=precision, force=True)
            scores[precision] = score_values(dest, ph)
            seconds[precision] = report["timings_s"]["predict"]
            per[precision]["seconds"] += seconds[precision]
            per[precision]["scores"].append(scores[precision])
        mask = np.asarray(nib.load(str(ph / "mask.nii.gz")).dataobj) > 0
        rows.append((kind, scheme, snr, seconds, scores,
                     agreement(ph.parent / "predict-float32", ph.parent / "predict-bfloat16", mask)))
    m = machine_info(device)
    native = native_bfloat16(torch.device(device))

    lines = [
        "# `predict --precision bfloat16` (`benchmarks/precision.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']} "
         f"(native bfloat16: {'yes' if native else 'no'}); torch {m['torch']}, shdeconv {m['shdeconv']}. "
         f"Seed {seed}, size {size}; the shipped model; {len(cells)} phantoms: "
         + ", ".join(f"{k} {s} SNR {n:g}" for k, s, n in cells) + ".\n"),
        "Mean over the phantoms; seconds: the network phase summed over the same phantoms in the same run.\n",
        "| precision | seconds (x float32) | " + " | ".join(SCORE_KEYS) + " |",
        "|---|---:|" + "---:|" * len(SCORE_KEYS),
    ]
    base = per["float32"]["seconds"]
    for p in PRECISIONS:
        lines.append(f"| {p} | {per[p]['seconds'] / base:.2f} | {mean_score_cells(per[p]['scores'])} |")
    lines += ["", "## Per phantom: float32 -> bfloat16\n",
              "| kind | scheme | SNR | seconds | " + " | ".join(SCORE_KEYS)
              + " | fODF rel. difference | first peak to nearest float32 peak, median / 99th pct (°) |",
              "|---|---|---:|---:|" + "---:|" * (len(SCORE_KEYS) + 2)]
    for kind, scheme, snr, sec, sc, (rel, med, p99) in rows:
        lines.append(f"| {kind} | {scheme} | {snr:g} | {sec['float32']:.2f} -> {sec['bfloat16']:.2f} | "
                     + " | ".join(f"{format_score(k, a)} -> {format_score(k, b)}"
                                  for k, a, b in zip(SCORE_KEYS, sc["float32"], sc["bfloat16"]))
                     + f" | {rel:.4f} | {med:.2f} / {p99:.2f} |")
    return "\n".join(lines) + "\n"


def volume_speed(folder: Path, rounds: int, device: str) -> str:
    """Network-phase seconds on ``folder``'s volume: float32 and bfloat16 at ``auto_batch``'s
    tiles per pass for each, and bfloat16 at float32's batch, alternating."""
    import torch

    from shdeconv.fitting import load_subject
    from shdeconv.fitting._subject import attach_subject
    from shdeconv.inference import DEFAULT_TILE_OVERLAP, auto_batch, predict_volume, tile_workers, volume_input
    from shdeconv.models import LoadedModel

    dev = torch.device(device)
    loaded = LoadedModel.load(None)
    net = loaded.fresh()
    subject = load_subject(folder / "dwi.nii.gz", folder / "bvals", folder / "bvecs", folder / "mask.nii.gz",
                           lmax=net.config.response_lmax, keep_raw=False)
    attach_subject(net, subject)
    inputs = volume_input(net, subject.signal, subject.mask)
    tile = loaded.patch_size
    batch = {p: auto_batch(net, dev, tile, precision=p) for p in PRECISIONS}
    arms = [("float32", batch["float32"]), ("bfloat16", batch["bfloat16"])]
    if batch["bfloat16"] != batch["float32"]:
        arms.append(("bfloat16", batch["float32"]))
    seconds = {arm: [] for arm in arms}
    outputs = {}
    for r in range(rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            t = time.perf_counter()
            outputs[arm[0]], _ = predict_volume(net, inputs, subject.mask, tile=tile, overlap=DEFAULT_TILE_OVERLAP,
                                                device=dev, sw_batch_size=arm[1], workers=tile_workers(dev),
                                                precision=arm[0])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds[arm].append(time.perf_counter() - t)
    m = subject.mask
    rel = np.linalg.norm(outputs["bfloat16"][m] - outputs["float32"][m]) / np.linalg.norm(outputs["float32"][m])
    med = {arm: float(np.median(v)) for arm, v in seconds.items()}
    base = med[arms[0]]
    lines = [f"## Network phase on `{folder}` ({int(m.sum())} mask voxels, {rounds} alternating rounds)\n",
             f"{tile_workers(dev)} tile worker(s); `auto_batch` chooses {batch['float32']} tile(s) per pass in "
             f"float32 and {batch['bfloat16']} in bfloat16.\n",
             "| precision | tiles per pass | seconds per round | median s | x float32 |", "|---|---:|---|---:|---:|"]
    for arm in arms:
        lines.append(f"| {arm[0]} | {arm[1]} | {', '.join(f'{v:.1f}' for v in seconds[arm])} | {med[arm]:.1f} | "
                     f"{base / med[arm]:.2f} |")
    lines += ["", f"fODF relative difference over the mask, bfloat16 vs float32: {rel:.4f}."]
    return "\n".join(lines) + "\n"


def profile(passes: int = 10) -> str:
    """Self time of the largest torch operators of the shipped network on 8^3 tiles (batch 4,
    one thread, random input), float32 against bfloat16: where a precision's time goes."""
    import torch

    from shdeconv.models import LoadedModel

    net = LoadedModel.load(None).fresh().eval()
    rng = np.random.default_rng(0)
    net.set_init_matrix(0.1 * rng.standard_normal((net.n_input_coeffs + net.n_iso, 31)).astype(np.float32))
    net.chebyshev = "dense"
    x = torch.as_tensor(rng.standard_normal((4, 31, 8, 8, 8)), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = {}
    try:
        with torch.no_grad():
            for precision in PRECISIONS:
                net.precision = precision
                for _ in range(3):
                    net(x)
                with torch.profiler.profile() as prof:
                    for _ in range(passes):
                        net(x)
                times[precision] = {e.key: e.self_cpu_time_total / passes / 1e3 for e in prof.key_averages()}
    finally:
        torch.set_num_threads(threads)
        net.precision = "float32"
    top = sorted(times["float32"], key=lambda k: -times["float32"][k])[:8]
    lines = [f"## Profile: one pass of 4 tiles of 8^3, one thread (ms of self time, mean of {passes})\n",
             "| operator | float32 | bfloat16 |", "|---|---:|---:|"]
    for k in top:
        lines.append(f"| `{k}` | {times['float32'][k]:.1f} | {times['bfloat16'].get(k, 0.0):.1f} |")
    lines.append(f"| all | {sum(times['float32'].values()):.1f} | {sum(times['bfloat16'].values()):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/precision", snrs="10,20,30")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--voxelwise", default="clinical", help="schemes of voxel-wise phantoms at SNR 20 ('' for none)")
    p.add_argument("--volume", type=Path, default=None, help="also time the network phase on this phantom folder")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds on --volume")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cells = [("spatial", s, float(n)) for s in args.schemes.split(",") for n in args.snrs.split(",")]
    cells += [("voxelwise", s, 20.0) for s in args.voxelwise.split(",") if s]
    text = run(args.output, cells, args.seed, args.size, args.device)
    if args.volume is not None:
        text += "\n" + volume_speed(args.volume, args.rounds, args.device)
    text += "\n" + profile()
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
