"""What spatial context does to an amortized model where neighbours are unrelated.

On the voxel-wise crossing set (every voxel an independent random 1-3 fibre configuration)
``predict`` misses most second fibres. This script separates the two possible causes, the
network's per-voxel deconvolution and its pooling of neighbours, on the same phantoms:

* ``csd``: DIPY CSD (``shdeconv csd``), the reference;
* ``linear``: the network's input, the linear deconvolution ``D s`` (lmax 8), alone;
* ``predict``: the model on its tiles, as ``shdeconv predict`` runs it;
* ``predict, own voxel only``: the same model on tiles in which every voxel is surrounded by
  copies of itself, so that pooling neighbours adds nothing; the centre's output is kept.

and prints the neighbourhood coherence of the linear fODF
(:func:`shdeconv.models.neighbourhood_coherence`) by number of fibres, on all its orders and on
its anisotropy-weighted order-2 part (the gated models' measure), which tells the two kinds of
phantom apart (and keeps doing so at low SNR). Bundle phantoms (``spatial``) are scored alongside for contrast.

Usage: python benchmarks/voxelwise_context.py [-o bench_out/context] [--model M] [--seed 0]
       [--snrs 20] [--markdown benchmarks/results/voxelwise_context_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from _report import add_phantom_options, publish

KINDS = ("voxelwise", "spatial")


def _scores(sh_world, truth, mask):
    from shdeconv.direction import sh_peaks
    from shdeconv.evaluation._metrics import score

    dirs, amps = sh_peaks(np.asarray(sh_world, np.float64))
    g = score(dirs, amps, truth.peak_dirs, truth.n_fibres, mask)["groups"]
    return [g[k]["success_rate"] for k in ("1", "2", "3", "all")]


def run(out: Path, snrs: list[float], seed: int, model, device: str) -> str:
    import nibabel as nib
    import torch

    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.fitting import load_subject, run_csd, run_predict
    from shdeconv.fitting._subject import attach_subject
    from shdeconv.models import LoadedModel, neighbourhood_coherence
    from shdeconv.sim import simulate_to_dir
    from shdeconv.sim._io import load_truth
    from shdeconv.sphere import n_coeffs, rotate_sh

    loaded = LoadedModel.load(model)
    rows, coherence = [], []
    for kind in KINDS:
        for snr in snrs:
            ph = simulate_to_dir(out / f"{kind}-snr{snr:g}" / "phantom", kind=kind, scheme="clinical", snr=snr,
                                 seed=seed)
            inputs = (ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs")
            truth = load_truth(ph / "truth")
            mask = truth.mask
            run_csd(*inputs, ph.parent / "csd", mask=ph / "mask.nii.gz", force=True)
            run_predict(*inputs, ph.parent / "predict", mask=ph / "mask.nii.gz", model=loaded, device=device,
                        progress=False, force=True)
            net = loaded.fresh().eval()
            subject = load_subject(*inputs, ph / "mask.nii.gz", lmax=net.config.response_lmax)
            attach_subject(net, subject)
            with torch.no_grad():
                sig = torch.as_tensor(subject.signal, dtype=torch.float32)
                lin = torch.einsum("pg,xyzg->xyzp", net.init_matrix, sig)
                # on every order of the linear fODF, and on its order-2 part weighted by the
                # neighbours' anisotropy (the gate's default)
                cs = {}
                for label, order, weighted in (("all orders", net.config.response_lmax, False),
                                               ("order 2, weighted", 2, True)):
                    k = n_coeffs(order)
                    grid = torch.einsum("vs,xyzs->vxyz", net.to_grid[:, :k], lin[..., :k])
                    cs[label] = neighbourhood_coherence(grid[None], weighted=weighted)[0].numpy()
                flat = lin.reshape(-1, lin.shape[-1])
                own = []
                for i in range(0, flat.shape[0], 64):
                    tiles = flat[i:i + 64, :, None, None, None].expand(-1, -1, 8, 8, 8).contiguous()
                    own.append(net(linear=tiles)[0][:, :, 4, 4, 4])
                own = torch.cat(own).reshape(*lin.shape[:3], -1).numpy()
            csd, pred = (np.asarray(nib.load(ph.parent / name / "fodf.nii.gz").dataobj) for name in ("csd", "predict"))
            linear, own = (subject.uncrop(rotate_sh(sh, subject.rotation)) for sh in (lin[..., :45].numpy(), own))
            for name, sh in (("csd", csd), ("linear", linear), ("predict", pred), ("predict, own voxel only", own)):
                rows.append((kind, snr, name, _scores(sh, truth, mask)))
            for label, c in cs.items():
                c = subject.uncrop(c)
                coherence.append((kind, snr, label, [np.percentile(c[mask & (truth.n_fibres == k)], [10, 50, 90])
                                                     for k in (1, 2, 3)]))
    m = machine_info(device)
    lines = [
        "# Spatial context and voxel-wise crossings (`benchmarks/voxelwise_context.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs; torch {m['torch']}, shdeconv {m['shdeconv']}. Clinical "
         f"scheme (b=0 x 3 + b=1000 x 30), seed {seed}, model {loaded.path.name}. Success rate by number of "
         f"fibres (25° tolerance, peaks by `sh_peaks`).\n"),
        "| phantom | SNR | method | 1 fibre | 2 fibres | 3 fibres | all |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {s:g} | {n} | " + " | ".join(f"{v:.3f}" for v in vals) + " |" for k, s, n, vals in rows]
    lines += ["", ("Neighbourhood coherence of the linear fODF, on all its orders with every neighbour alike, "
                   "and on its order-2 part with the neighbours weighted by their anisotropy, the gated "
                   "models' measure (10th / 50th / 90th percentile):\n"),
              "| phantom | SNR | measure | 1 fibre | 2 fibres | 3 fibres |", "|---|---:|---|---|---|---|"]
    lines += [f"| {k} | {s:g} | {o} | " + " | ".join(" / ".join(f"{v:.2f}" for v in p) for p in ps) + " |"
              for k, s, o, ps in coherence]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_phantom_options(p, output="bench_out/context", snrs="20")
    p.add_argument("--model", type=Path, default=None, help="model (default: the shipped one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    publish(run(args.output, [float(s) for s in args.snrs.split(",")], args.seed, args.model, args.device),
            args.markdown)


if __name__ == "__main__":
    main()
