"""The paper's efficiency comparison at published scale: RT-ESD vs SHD vs ours, layer and U-Net.

Published scale: HEALPix nside 8, K = 5 Chebyshev terms, 3x3x3 isotropic spatial kernel, batch 1,
float32. The layer maps 32 -> 64 channels on an 8^3 patch; the U-Net has depth 4, width 32
(32/64/128/256 channels, two convolutions per block), 1 -> 1 channel, on 8^3 tiles (our tiles and
the authors' own benchmark patch; space halved at every level) and on 3^3 patches (the published
training patch; ours then pools the sphere only).

Arms (ours are ``shdeconv.nn.SpatioSphericalConv`` / ``shdeconv.models.SphericalUNet``):

* ``RT-ESD``: full sphere, dense Chebyshev projector, one full Conv3d kernel (``impl="dense"``);
* ``SHD``: the same on the folded hemisphere (the published SHD formulation, our code);
* ``ours``: hemisphere, ``impl="fast"`` (mixing GEMM to 4 distance classes + separable stencil),
  the sparse Chebyshev recursion for forward+backward (training), the dense projector for
  forward (what ``predict`` runs);
* ``published SHD`` / ``published RT-ESD``: the authors' own layer and U-Net code, timed in the
  same process, when ``--reference DIR`` points at a copy of their ``conv_benchmark`` folder
  (github.com/AxelElaldi/fast-equivariant-deconv; never part of this repository; it needs
  ``pygsp`` and ``healpy`` importable, e.g. ``pip install --target DIR/site pygsp healpy`` and
  ``PYTHONPATH=DIR/site``). Their configurations are those of their ``speed_*_media.py``:
  SHD = ``mixed`` convolution, hemisphere, dense, precomputed; RT-ESD = the ``--ablation`` run
  (full sphere, not dense, not precomputed).

``--dtype bfloat16`` runs every arm, ours and the authors', with bfloat16 parameters and input
(the loss in float32). Beside the layer table, the three GEMMs of our layer's class mixing
(forward ``W Z``, backward ``G Z^T`` and ``W^T G``; ``W`` 256 x 160, ``Z`` 160 x 196,608) are
timed alone in the same dtype: the time our formulation cannot go below at this machine's GEMM
speed, against the goal of 4x the authors' SHD layer.

Every arm runs in a fresh process, one after the other. Peak: growth of the peak memory during
its first forward+backward above what the process held just before (CPU: VmHWM through
/proc/self/clear_refs; GPU: ``max_memory_allocated``). Times: median of ``--reps`` calls after
one warm-up; forward in eval mode without gradients, forward+backward in train mode (loss =
mean square of the output).

Usage: python benchmarks/published_scale.py [--device cpu|cuda] [--reference DIR] [--reps 3]
       [--dtype float32|bfloat16] [--arms RT-ESD,SHD,ours] [--patches 8,3] [--skip-dense-unet]
       [--markdown benchmarks/results/published_scale_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import publish
from _timing import median_ms, peak_mb

from shdeconv.evaluation.benchmark import cpu_model
from shdeconv.models import SphericalUNet
from shdeconv.nn import SpatioSphericalConv

NSIDE, K, WIDTH, DEPTH = 8, 5, 32, 4
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
OURS = {"RT-ESD": {"hemisphere": False, "impl": "dense"},
        "SHD": {"hemisphere": True, "impl": "dense"},
        "ours": {"hemisphere": True, "impl": "fast"}}


# ---------------------------------------------------------------------------------------
# our arms
# ---------------------------------------------------------------------------------------
def our_layer(name: str):
    cfg = OURS[name]
    return SpatioSphericalConv(32, 64, NSIDE, K=K, kernel_size=3, **cfg), 32


def our_unet(name: str, patch: int):
    cfg = OURS[name]
    return SphericalUNet(1, 1, nside=NSIDE, depth=DEPTH, width=WIDTH, K=K, kernel_size=3,
                         spatial_levels=DEPTH - 1 if patch % 2 ** (DEPTH - 1) == 0 else 0, **cfg), 1


def _chebyshev(module, mode: str) -> None:
    for m in module.modules():
        if isinstance(m, SpatioSphericalConv):
            m.chebyshev = mode


# ---------------------------------------------------------------------------------------
# the authors' arms (imported from a copy outside this repository)
# ---------------------------------------------------------------------------------------
def _reference(directory: Path):
    import scipy.special

    if not hasattr(scipy.special, "sph_harm"):  # removed in SciPy 1.17; their SH matrices call it
        scipy.special.sph_harm = lambda m, n, theta, phi: scipy.special.sph_harm_y(n, m, phi, theta)
    sys.path.insert(0, str(directory))
    import utils.utils_equivariance as equi
    from utils import (
        graphconv,
        sampling,
        unet,
    )

    return graphconv, sampling, unet, equi


def published_layer(ref, name: str):
    graphconv, _, _, equi = ref
    shd = name == "published SHD"
    _, lap = equi.get_raw_sampling_hp(NSIDE, legacy=False, hemisphere=shd)
    if shd:
        layer = graphconv.ConvPrecomputed(32, 64, lap, K, 3, conv_name="mixed", isoSpa=True)
    else:
        layer = graphconv.Conv(32, 64, lap, K, 3, conv_name="mixed", isoSpa=True, dense=False,
                               precompute=False, einsum=True, repeat_interleave=True)
    return layer, 32


def published_unet(ref, name: str, patch: int):
    _, sampling, unet, _ = ref
    shd = name == "published SHD"
    g = sampling.HealpixSampling(NSIDE, DEPTH, patch, sh_degree=8, pooling_name="mixed",
                                 pooling_mode="average", hemisphere=shd, legacy=False)
    net = unet.GraphCNNUnet(1, 1, WIDTH, 2, 1, K, 3, g.pooling, g.laps, "mixed", True, True,
                            g.patch_size_list, g.vec, g.sampling.vectors.shape[0], old_conv=not shd,
                            dense=shd, precompute=shd, einsum=True, repeat_interleave=True)
    return net, 1


def _pixels(net, name: str) -> int:
    if isinstance(net, (SphericalUNet, SpatioSphericalConv)):
        return net.V
    return 6 * NSIDE**2 if name in ("published SHD", "SHD", "ours") else 12 * NSIDE**2


# ---------------------------------------------------------------------------------------
def measure(net, c_in: int, name: str, patch: int, device, reps: int, dtype=torch.float32) -> dict:
    """Peak of the first forward+backward, then the median times (run in a fresh process)."""
    net = net.to(device=device, dtype=dtype)
    torch.manual_seed(0)
    x = torch.randn(1, c_in, _pixels(net, name), patch, patch, patch, device=device, dtype=dtype)

    def fwd():
        net.eval()
        if name == "ours":
            _chebyshev(net, "dense")
        with torch.no_grad():
            net(x)

    def fwdbwd():
        net.train()
        if name == "ours":
            _chebyshev(net, "sparse")
        net(x).float().square().mean().backward()
        net.zero_grad(set_to_none=True)

    row = {"peak_mb": peak_mb(fwdbwd, device)}
    row["fwd_ms"] = median_ms(fwd, device, reps)
    row["fwdbwd_ms"] = median_ms(fwdbwd, device, reps)
    row["params"] = sum(p.numel() for p in net.parameters())
    return row


def run_arm(spec: dict) -> dict:
    """One arm in this process: ``spec`` = name, what ("layer" or "unet"), patch, device, reps, reference."""
    name, device = spec["name"], torch.device(spec["device"])
    ref = _reference(Path(spec["reference"])) if name.startswith("published") else None
    if spec["what"] == "layer":
        net, c = our_layer(name) if name in OURS else published_layer(ref, name)
    else:
        net, c = our_unet(name, spec["patch"]) if name in OURS else published_unet(ref, name, spec["patch"])
    return measure(net, c, name, spec["patch"], device, spec["reps"], DTYPES[spec.get("dtype", "float32")])


def mixing_gemm_floor_ms(device, dtype, reps: int) -> float:
    """Forward+backward time of our layer's class mixing alone: the three GEMMs ``W Z``,
    ``G Z^T`` and ``W^T G`` (``W`` ``(R Cout, Cin K)`` = 256 x 160, ``Z`` ``(Cin K, V S)``,
    V = 384 hemisphere pixels, S = 8^3), median of ``reps`` after a warm-up, in ms."""
    layer = SpatioSphericalConv(32, 64, NSIDE, K=K, kernel_size=3, **OURS["ours"])
    torch.manual_seed(0)
    w = layer.mixing_matrix("ki").detach().to(device=device, dtype=dtype)
    z = torch.randn(w.shape[1], layer.V * 8**3, device=device, dtype=dtype)
    g = torch.randn(w.shape[0], z.shape[1], device=device, dtype=dtype)
    return median_ms(lambda: (w @ z, g @ z.T, w.T @ g), device, reps)


def in_fresh_process(spec: dict) -> dict:
    """:func:`run_arm` in a child process, so that every arm's peak memory is its own; a failed
    arm gives ``{"error": its last line of stderr}``."""
    proc = subprocess.run([sys.executable, __file__, "--arm", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(title: str, rows: dict, names: list[str]) -> list[str]:
    """Markdown rows; ratios against the RT-ESD of the same code (ours or the authors')."""
    out = [f"### {title}", "",
           ("| arm | parameters | forward ms | forward+backward ms | peak MB | fwd+bwd time / RT-ESD | "
           "peak / RT-ESD | fwd+bwd time / ours |"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        if n not in rows:
            continue
        r = rows[n]
        rt = rows.get("published RT-ESD" if n.startswith("published") else "RT-ESD")  # same code's RT-ESD
        rel = f"{r['fwdbwd_ms'] / rt['fwdbwd_ms']:.0%}" if rt else "-"
        mem = f"{r['peak_mb'] / rt['peak_mb']:.0%}" if rt and rt["peak_mb"] > 0 else "-"
        up = f"{r['fwdbwd_ms'] / rows['ours']['fwdbwd_ms']:.2f}x" if "ours" in rows else "-"
        out.append(f"| {n} | {r['params']:,} | {r['fwd_ms']:.1f} | {r['fwdbwd_ms']:.1f} | {r['peak_mb']:.0f} | "
                   f"{rel} | {mem} | {up} |")
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--reference", type=Path, default=None,
                    help="the authors' conv_benchmark folder (a copy outside this repository)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=tuple(DTYPES),
                    help="parameters and input of every arm (default float32)")
    ap.add_argument("--patches", default="8,3", help="U-Net patch sides (default 8,3)")
    ap.add_argument("--arms", default=",".join(OURS), help=f"our arms (default {','.join(OURS)})")
    ap.add_argument("--skip-dense-unet", action="store_true",
                    help="leave out our dense U-Nets (RT-ESD, SHD): minutes each on a CPU")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # internal: one arm, JSON spec
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(json.loads(args.arm))))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("published_scale.py: error: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    ours = [a for a in args.arms.split(",") if a]
    if unknown := set(ours) - set(OURS):
        print(f"published_scale.py: error: unknown arms {sorted(unknown)}; expected some of {list(OURS)}",
              file=sys.stderr)
        return 2
    if args.reference and not (args.reference / "utils" / "unet.py").is_file():
        print(f"published_scale.py: error: {args.reference}: not the authors' conv_benchmark folder "
              "(no utils/unet.py)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none"
    lines = ["# The paper's efficiency comparison at published scale (`benchmarks/published_scale.py`)", "",
             (f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__} ({torch.get_num_threads()} threads), GPU: {gpu}; device {device}."),
             f"Command: `python benchmarks/published_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", (f"nside 8, K 5, 3x3x3 kernel, batch 1, {args.dtype}; median of "
             f"{args.reps} after a warm-up. Published arms: the authors' code, same process."), ""]

    names = ours + (["published RT-ESD", "published SHD"] if args.reference else [])
    base = {"device": args.device, "reps": args.reps, "dtype": args.dtype,
            "reference": str(args.reference.resolve()) if args.reference else None}

    def arms(what, patch, skip=()):
        rows, failed = {}, []
        for n in names:
            if n in skip:
                continue
            r = in_fresh_process(dict(base, name=n, what=what, patch=patch))
            print(n, what, f"{patch}^3", r, flush=True)
            if "error" in r:
                failed.append(f"{n}: failed ({r['error']}).")
            else:
                rows[n] = r
        return rows, failed

    def table(title, measured):
        rows, failed = measured
        return _table(title, rows, names)[:-1] + ([""] + failed if failed else []) + [""]

    measured = arms("layer", 8)
    lines += table("Layer: 32 -> 64 channels, 8^3 patch", measured)
    layers = measured[0]
    floor = mixing_gemm_floor_ms(device, DTYPES[args.dtype], max(args.reps, 3))
    lines += [f"Our layer's class mixing alone (its three GEMMs, {args.dtype}, same run): {floor:.1f} ms "
              "forward+backward" + (f"; our whole layer takes {layers['ours']['fwdbwd_ms'] / floor:.2f}x that"
                                    if "ours" in layers else "")
              + (f"; the authors' SHD layer / 4 = {layers['published SHD']['fwdbwd_ms'] / 4:.1f} ms"
                 if "published SHD" in layers else "") + ".", ""]
    for patch in (int(p) for p in args.patches.split(",") if p):
        lines += table(f"U-Net: depth 4, width 32, 1 -> 1 channel, {patch}^3 "
                       + ("(space halved at each level)" if patch % 8 == 0 else "(ours: sphere pooling only)"),
                       arms("unet", patch, ("RT-ESD", "SHD") if args.skip_dense_unet else ()))
    lines.append(f"Total {time.perf_counter() - t0:.0f} s.")
    publish("\n".join(lines), args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
