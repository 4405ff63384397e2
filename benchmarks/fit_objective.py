"""The per-subject unsupervised fit against CSD: ``fit --variant direct`` and the networks.

Spatial bundle phantoms (``shdeconv.sim``) per seed, scheme and SNR; every method gets the
same mask and scorer (``shdeconv evaluate``). Methods are named ``NAME[:key=value,...]``:

* ``csd``, ``mppca-csd``: DIPY CSD on the raw and on the MP-PCA-denoised data (lmax 8);
* ``direct``: ``fit --variant direct`` from the linear start, the objective without any trained
  model (keys: ``iterations``, ``lr``, ``lmax``, ``schedule``, ``init`` = ``linear``, ``csd`` or
  ``predict``, the start ``fit`` uses by default);
* ``shd-tv``, ``shd``, ``rtesd``, ``esd``: ``fit --variant ...`` (keys: ``iterations``, ``lr``,
  ``scale`` = ``laptop`` or ``published``, ``width``, ``depth``, ``K``, ``nside``, ``lmax``,
  ``batch``, ``patch``, ``init`` = ``random`` or ``direct``, the warm start);
* ``predict``: the shipped model.

Loss weights of every fit method: keys ``tv``, ``sparsity``, ``nonnegativity``.
Every fit method runs on the raw data unless the key ``denoise=mppca`` is given;
``tissues=gm+csf`` sets the isotropic tissues of single-shell fits. Seconds are the
estimator's own (fit, or fit + prediction for the networks).

Usage: python benchmarks/fit_objective.py --seeds 21,22 [--schemes clinical] [--snrs 20]
       [--methods 'csd;mppca-csd;direct:tv=1'] [-o bench_out/fit_objective] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from _report import publish

DEFAULT_METHODS = "csd;mppca-csd;direct;shd-tv"


def parse_method(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        opts[key] = value
    return name, opts


def run_method(spec: str, ph: Path, out: Path, device: str) -> tuple[float, Path]:
    from shdeconv.fitting import (
        DirectConfig,
        FitConfig,
        default_loss_weights,
        run_csd,
        run_fit,
        run_predict,
    )
    from shdeconv.models import NetworkConfig

    name, o = parse_method(spec)
    inputs = (ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs")
    mask = ph / "mask.nii.gz"
    denoise = o.pop("denoise", "none")
    if name in ("csd", "mppca-csd"):
        rep = run_csd(*inputs, out, mask=mask, denoise="mppca" if name == "mppca-csd" else denoise, force=True)
        return rep["timings_s"]["fit"], out
    if name == "predict":
        rep = run_predict(*inputs, out, mask=mask, device=device, progress=False, denoise=denoise, force=True)
        return rep["timings_s"]["predict"], out
    init = o.pop("init") if name != "direct" and "init" in o else "random"
    weights = default_loss_weights(name, init=init, **{k: float(o.pop(k)) for k in ("tv", "sparsity", "nonnegativity")
                                                       if k in o})
    lmax = int(o.pop("lmax")) if "lmax" in o else None
    tissues = tuple(o.pop("tissues").split("+")) if "tissues" in o else None
    if name == "direct":
        o.setdefault("init", "linear")
        cfg = DirectConfig(**{k: {"lr": float, "init": str, "schedule": str}.get(k, int)(v) for k, v in o.items()},
                           **({} if lmax is None else {"lmax": lmax}))
        rep = run_fit(*inputs, out, mask=mask, variant="direct", lmax=lmax, device=device, loss_weights=weights,
                      direct_config=cfg, progress=False, denoise=denoise, single_shell_tissues=tissues, force=True)
        return rep["timings_s"]["fit"], out
    fit = {k: o.pop(k) for k in ("iterations", "lr", "batch", "patch") if k in o}
    fit_config = FitConfig(init=init, **{({"batch": "batch_size", "patch": "patch_size"}.get(k, k)):
                                         (float(v) if k == "lr" else int(v)) for k, v in fit.items()})
    net_config = NetworkConfig.at_scale(o.pop("scale", "laptop"), **{k: int(v) for k, v in o.items()})
    rep = run_fit(*inputs, out, mask=mask, variant=name, lmax=lmax, device=device, fit_config=fit_config,
                  net_config=net_config, loss_weights=weights, progress=False, denoise=denoise,
                  single_shell_tissues=tissues, force=True)
    return rep["timings_s"]["fit"] + rep["timings_s"]["predict"], out


def run(out: Path, seeds, schemes, snrs, methods, size: str, device: str, kinds=("spatial",)) -> str:
    from shdeconv.evaluation import evaluate_dirs, format_comparison
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.sim import simulate_to_dir

    m = machine_info(device)
    parts = [
        "# Per-subject fit vs CSD (`benchmarks/fit_objective.py`)\n",
        f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
        f"torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}. Phantom size {size}.\n",
    ]
    for kind, scheme, snr, seed in ((k, sc, sn, se) for k in kinds for sc in schemes for sn in snrs for se in seeds):
        prefix = "" if kind == "spatial" else f"{kind}-"
        cell = out / f"{prefix}{scheme}-snr{snr:g}-seed{seed}"
        ph = cell / "phantom"
        if not (ph / "truth").exists():
            simulate_to_dir(ph, kind=kind, scheme=scheme, snr=snr, seed=seed, size=size)
        rows = []
        for spec in methods:
            seconds, pred = run_method(spec, ph, cell / spec.replace(":", "_").replace(",", "_"), device)
            rows.append((spec, seconds, evaluate_dirs(pred, ph)))
            logging.getLogger("fit_objective").info("%s seed %d %s done", scheme, seed, spec)
        parts.append(f"## {kind}, {scheme}, SNR {snr:g}, seed {seed}\n\n" + format_comparison(rows))
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/fit_objective"))
    p.add_argument("--seeds", default="21,22")
    p.add_argument("--kinds", default="spatial", help="phantom kinds: spatial (bundles), voxelwise (random)")
    p.add_argument("--schemes", default="clinical")
    p.add_argument("--snrs", default="20")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="';'-separated method specs (see the docstring)")
    p.add_argument("--size", default="default", choices=["default", "quick"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    methods = [s.strip() for s in args.methods.split(";") if s.strip()]
    text = run(args.output, [int(s) for s in args.seeds.split(",")], args.schemes.split(","),
               [float(s) for s in args.snrs.split(",")], methods, args.size, args.device, args.kinds.split(","))
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
