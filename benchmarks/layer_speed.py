"""Speed and memory of the spatio-spherical layer: dense Conv3d (RT-ESD / SHD) vs fast (shdeconv).

Shapes: batch 1, 32 -> 64 channels, K = 5, 3x3x3 kernel, 8x8x8 patch, float32, nside 2, 4, 8.

Variants
--------
dense-sphere      dense projector + full Conv3d kernel on the full sphere (RT-ESD)
dense-hemisphere  the same on the folded hemisphere (SHD as published)
fast-hemisphere   ours: sparse Chebyshev recursion + one mixing matmul to R = 4 distance
                  classes + separable class stencil (six neighbour sums)
(table only) fast-hemisphere-P: ours with the dense projector instead of the recursion

Timing: median of ``--reps`` runs after one warm-up. Memory: peak resident set size above the
RSS before the call, from /proc/self/status (VmHWM reset through /proc/self/clear_refs), i.e.
everything torch allocates on the CPU including freed-and-reused pages; falls back to
``resource.getrusage`` (never reset) elsewhere. GFLOP/s counts multiply-adds as 2 flops:
projector (K V^2 Cin S) or recursion ((K-1) nnz(L) Cin S), Conv3d (Cout Cin K 27 V S) or
mixing (R Cout Cin K V S) plus stencil adds (12 Cout V S); fwd+bwd counts 3x the forward.
The peak is a 4096^2 float32 matmul timed in the same run.

Usage: python benchmarks/layer_speed.py [--device cpu|cuda] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch
from _timing import median_ms, peak_mb

from shdeconv.evaluation.benchmark import cpu_model
from shdeconv.models import SphericalUNet
from shdeconv.nn import SpatioSphericalConv, sparse_rescaled_laplacian

logger = logging.getLogger("layer_speed")

VARIANTS = {
    "dense-sphere": dict(hemisphere=False, impl="dense", chebyshev="dense"),
    "dense-hemisphere": dict(hemisphere=True, impl="dense", chebyshev="dense"),
    "fast-hemisphere": dict(hemisphere=True, impl="fast", chebyshev="sparse"),
    "fast-hemisphere-P": dict(hemisphere=True, impl="fast", chebyshev="dense"),
}
JSON_VARIANTS = ("dense-sphere", "dense-hemisphere", "fast-hemisphere")


def matmul_peak_gflops(device, reps):
    a = torch.randn(4096, 4096, device=device)
    b = torch.randn(4096, 4096, device=device)
    ms = median_ms(lambda: a @ b, device, reps)
    return 2 * 4096**3 / ms / 1e6


def layer_flops(nside, variant, cin=32, cout=64, K=5, S=512):
    cfg = VARIANTS[variant]
    V = 12 * nside**2 // (2 if cfg["hemisphere"] else 1)
    if cfg["chebyshev"] == "dense":
        sph = K * V * V * cin * S
    else:
        sph = (K - 1) * sparse_rescaled_laplacian(nside, cfg["hemisphere"]).nnz * cin * S
    if cfg["impl"] == "dense":
        mix, adds = cout * cin * K * 27 * V * S, 0
    else:
        mix, adds = 4 * cout * cin * K * V * S, 12 * cout * V * S
    return 2 * (sph + mix) + adds


def bench_layer(nside, variant, device, reps):
    torch.manual_seed(0)
    cfg = VARIANTS[variant]
    layer = SpatioSphericalConv(32, 64, nside, K=5, kernel_size=3, **cfg).to(device)
    x = torch.randn(1, 32, layer.V, 8, 8, 8, device=device, requires_grad=True)

    def fwd():
        with torch.no_grad():
            layer(x)

    def fwdbwd():
        layer(x).sum().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    row = {"nside": nside, "variant": variant,
           "fwd_ms": median_ms(fwd, device, reps),
           "fwdbwd_ms": median_ms(fwdbwd, device, reps)}
    row["peak_mb"] = peak_mb(fwdbwd, device)
    return row


def bench_unet(hemisphere, impl, device, reps, nside=8, depth=3, width=16):
    torch.manual_seed(0)
    net = SphericalUNet(2, 3, nside=nside, depth=depth, width=width, K=5,
                        hemisphere=hemisphere, impl=impl).to(device)
    x = torch.randn(1, 2, net.V, 8, 8, 8, device=device)

    def fwdbwd():
        net(x).square().mean().backward()
        net.zero_grad(set_to_none=True)

    ms = median_ms(fwdbwd, device, reps)
    return {"sphere": "hemisphere" if hemisphere else "full sphere", "impl": impl,
            "fwdbwd_ms": ms, "peak_mb": peak_mb(fwdbwd, device)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", action="store_true", help="last stdout line: JSON list of layer rows")
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 5 (U-Net: 2)")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    reps = args.reps or (3 if args.quick else 5)

    peak = matmul_peak_gflops(device, reps)
    print(f"# machine: {cpu_model()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    print(f"# float32 4096^2 matmul peak: {peak:.1f} GFLOP/s\n")
    print("| nside | variant | fwd ms | fwd+bwd ms | peak MB | fwd GFLOP/s | fwd+bwd GFLOP/s | "
          "fwd+bwd / peak |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for nside in (2, 4, 8):
        for variant in VARIANTS:
            r = bench_layer(nside, variant, device, reps)
            fl = layer_flops(nside, variant)
            g1, g3 = fl / r["fwd_ms"] / 1e6, 3 * fl / r["fwdbwd_ms"] / 1e6
            print(f"| {nside} | {variant} | {r['fwd_ms']:.1f} | {r['fwdbwd_ms']:.1f} | "
                  f"{r['peak_mb']:.0f} | {g1:.1f} | {g3:.1f} | {g3 / peak:.2f} |", flush=True)
            rows.append(r)
    print()
    by = {(r["nside"], r["variant"]): r for r in rows}
    for nside in (2, 4, 8):
        d, f = by[nside, "dense-hemisphere"], by[nside, "fast-hemisphere"]
        s = by[nside, "dense-sphere"]
        print(f"# nside {nside}: fast-hemisphere speed-up vs dense-hemisphere: fwd "
              f"{d['fwd_ms'] / f['fwd_ms']:.2f}x, fwd+bwd {d['fwdbwd_ms'] / f['fwdbwd_ms']:.2f}x; "
              f"vs dense-sphere fwd+bwd {s['fwdbwd_ms'] / f['fwdbwd_ms']:.2f}x")

    print("\nU-Net forward+backward (nside 8, depth 3, width 16, K 5, 2 -> 3 channels, 8^3 patch)\n")
    print("| sphere | impl | fwd+bwd ms | peak MB |")
    print("|---|---|---:|---:|")
    for hemisphere in (False, True):
        for impl in ("dense", "fast"):
            r = bench_unet(hemisphere, impl, device, max(2, reps - 2))
            print(f"| {r['sphere']} | {r['impl']} | {r['fwdbwd_ms']:.1f} | {r['peak_mb']:.0f} |", flush=True)
    if args.json:
        print(json.dumps([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                          for r in rows if r["variant"] in JSON_VARIANTS]))


if __name__ == "__main__":
    main()
