"""Train the amortized model shipped in ``src/shdeconv/models/pretrained/`` (reproducible recipe).

The training set is simulated here with ``shdeconv.sim`` (seeds 1000+, so the phantoms of the
tests, the demo and the benchmarks, seeds < 1000, are held out): spatial phantoms of random
geometry in the sparse (15 directions), clinical (30) and multi-shell (3 x 90) schemes at SNR
10-40, plus voxel-wise crossing sets. The network is trained with the unsupervised loss of each
subject plus the supervised term against the phantoms' true fODFs, then copied into the package
with a JSON record of this command, the data and the seed.

The shipped model is made in two steps:

    python scripts/train_pretrained.py --iterations 3000 -o train_out/pretrained
    python scripts/train_pretrained.py --iterations 3000 --spatial 15 --voxelwise 15 --gate \
        --init train_out/pretrained/model.pt --freeze-spatial -o train_out/gated --install

The first trains the spatial network (linear head, lmax 8; the model shipped before the gate,
SHA-256 e1feb186...); the second keeps it as the spatial path and trains a voxel-wise path
beside it on as many voxel-wise as spatial phantoms, blended per voxel by the neighbourhood's
coherence and the voxel's own anisotropy (``NetworkConfig.gate``; docs/benchmarks.md).
``--head softplus`` trains the Softplus head (lmax 10, the linear skip, the published TV weight)
that was measured against the spatial network and not shipped (same place).

Resumable: rerunning the same command continues from ``OUTDIR/checkpoint.pt`` (and only
installs when the model of that many iterations is already there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from shdeconv.io import InputError
from shdeconv.losses import TV_WEIGHT, LossWeights
from shdeconv.models import NetworkConfig
from shdeconv.models._store import PRETRAINED, load_model
from shdeconv.sim import PhantomVariation, simulate_to_dir
from shdeconv.training import TrainConfig, train

SCHEMES = ("sparse", "clinical", "multishell")
SNRS = (10, 15, 20, 30, 40)
#: TV weight of the shipped (linear-head) model
SHIPPED_TV = 0.01
#: ``--vary``: uniform ranges of the departures from the clean phantom (PhantomVariation fields)
VARY_RANGES = {"dispersion_deg": (0.0, 20.0), "diffusivity_jitter": (0.0, 0.2), "noise_fwhm": (0.0, 2.0),
               "bias_field": (0.0, 0.3)}


def variation(seed: int, names=tuple(VARY_RANGES)) -> PhantomVariation:
    """The departures ``names`` (of :data:`VARY_RANGES`) given to a varied training phantom, drawn
    from its seed; every departure is drawn, so each one's value does not depend on ``names``."""
    rng = np.random.default_rng([seed, 53])
    lo, hi = zip(*VARY_RANGES.values())
    drawn = dict(zip(VARY_RANGES, (float(v) for v in rng.uniform(lo, hi))))
    return PhantomVariation(**{k: v for k, v in drawn.items() if k in names})


def training_set(root: Path, n_spatial: int, n_voxelwise: int, jobs: int = 1, vary=()) -> list[Path]:
    """Simulate (or reuse) the training phantoms; seeds 1000 + i, ``jobs`` processes at a time.

    With ``vary`` (names of :data:`VARY_RANGES`) every second phantom (odd ``i``) gets those
    departures (:func:`variation`).
    """
    todo, dirs = [], []
    tag = "-varied" if set(vary) == set(VARY_RANGES) else "-varied-" + "+".join(sorted(vary))
    for i in range(n_spatial + n_voxelwise):
        kind = "spatial" if i < n_spatial else "voxelwise"
        scheme, snr, seed = SCHEMES[i % 3], SNRS[i % len(SNRS)], 1000 + i
        varied = bool(vary) and i % 2 == 1
        d = root / f"{kind}-{scheme}-snr{snr}-seed{seed}{tag if varied else ''}"
        if not (d / "truth" / "truth.json").exists():
            todo.append({"outdir": d, "kind": kind, "scheme": scheme, "snr": snr, "seed": seed,
                         "variation": variation(seed, vary) if varied else None})
        dirs.append(d)
    if jobs > 1 and len(todo) > 1:  # each phantom depends on its seed only, so the order does not matter
        with ProcessPoolExecutor(min(jobs, len(todo))) as pool:
            list(pool.map(_simulate, todo))
    else:
        for job in todo:
            _simulate(job)
    return dirs


def _simulate(job: dict) -> Path:
    return simulate_to_dir(**job)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("train_out/pretrained"))
    p.add_argument("--iterations", type=int, default=4000)
    p.add_argument("--spatial", type=int, default=15, help="spatial phantoms (default 15)")
    p.add_argument("--voxelwise", type=int, default=3, help="voxel-wise phantoms (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="patches per step")
    p.add_argument("--jobs", type=int, default=1, help="processes that simulate the phantoms")
    p.add_argument("--head", choices=("linear", "softplus"), default="linear",
                   help="output head: linear (the shipped model's: a correction of D s at lmax 8) or softplus "
                        "(non-negative on the grid, SH up to --lmax)")
    p.add_argument("--lmax", type=int, default=10, help="softplus head: output SH order (default 10; the "
                                                        "responses stop at 8)")
    p.add_argument("--no-skip", dest="skip", action="store_false",
                   help="softplus head without the linear skip (by default D s enters before the Softplus)")
    p.add_argument("--nside", type=int, default=4, help="HEALPix resolution of the network (default 4)")
    p.add_argument("--width", type=int, default=8, help="channels of the first level (default 8)")
    p.add_argument("--tv", type=float, default=None,
                   help=f"spatial TV weight (default: {SHIPPED_TV} with the linear head, as the shipped model; "
                        f"{TV_WEIGHT}, the published weight, with the softplus head)")
    p.add_argument("--coherence", action="store_true",
                   help="a second input channel: how much each voxel's linear fODF agrees with its neighbours'")
    p.add_argument("--gate", action="store_true",
                   help="blend a voxel-wise and a spatial path per voxel, by the neighbourhood's coherence")
    p.add_argument("--coherence-lmax", type=int, default=NetworkConfig.coherence_lmax,
                   help="SH orders of the linear fODF the coherence is measured on (default 2)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this model's weights where they fit (e.g. the shipped model's spatial "
                        "path for --gate)")
    p.add_argument("--freeze-spatial", action="store_true",
                   help="with --init and --gate: keep the spatial path as --init gave it, train the voxel-wise path")
    p.add_argument("--vary", nargs="?", const=",".join(VARY_RANGES), default="",
                   help="every second phantom with random departures from the clean one: these (comma-separated "
                        f"names of VARY_RANGES; alone: all of {', '.join(VARY_RANGES)})")
    p.add_argument("--device", default="auto")
    p.add_argument("--install", action="store_true", help="copy the result into the package")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    vary = tuple(v for v in args.vary.split(",") if v)
    if any(v not in VARY_RANGES for v in vary):
        print(f"train_pretrained.py: error: --vary takes names of {', '.join(VARY_RANGES)}", file=sys.stderr)
        return 2
    subjects = training_set(args.output / "data", args.spatial, args.voxelwise, args.jobs, vary)
    softplus = args.head == "softplus"
    tv = args.tv if args.tv is not None else (TV_WEIGHT if softplus else SHIPPED_TV)
    weights = LossWeights(tv=tv, supervised=1.0)
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, seed=args.seed)
    net_config = NetworkConfig(inputs="linear", head=args.head, nside=args.nside, width=args.width,
                               lmax=args.lmax if softplus else 8, response_lmax=8, skip=args.skip and softplus,
                               coherence=args.coherence, gate=args.gate,
                               coherence_lmax=args.coherence_lmax)
    record = {"command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
              "data": {"generator": "shdeconv.sim", "spatial": args.spatial, "voxelwise": args.voxelwise,
                       "schemes": SCHEMES, "snrs": SNRS, "seeds": f"1000..{999 + len(subjects)}",
                       **({"varied": "odd seeds", "vary_ranges": {k: VARY_RANGES[k] for k in vary}}
                          if vary else {})},
              "seed": args.seed, "loss_weights": asdict(weights), "train_config": asdict(config),
              "net_config": net_config.to_dict()}
    if args.freeze_spatial:
        if args.init is None or not args.gate:
            print("train_pretrained.py: error: --freeze-spatial needs --init and --gate", file=sys.stderr)
            return 2
        record["frozen"] = ["unet"]
    if args.init is not None:
        if not args.init.is_file():
            print(f"train_pretrained.py: error: {args.init}: model file not found", file=sys.stderr)
            return 2
        record["init"] = {"path": str(args.init), "sha256": hashlib.sha256(args.init.read_bytes()).hexdigest()}
    model = args.output / "model.pt"
    # a finished model of this very recipe is reused; a checkpoint is continued only when its
    # fingerprint matches this recipe (train refuses it otherwise, exit 2)
    def settings(r) -> str:  # the recipe without its command line's spelling
        return json.dumps({k: v for k, v in (r or {}).items() if k != "command"}, sort_keys=True)

    done = model.exists() and settings(load_model(model)[1].get("recipe")) == settings(record)
    if not done:
        try:
            train(subjects, args.output, net_config=net_config, weights=weights, config=config, device=args.device,
                  resume=(args.output / "checkpoint.pt").exists(), extra_meta={"recipe": record}, init=args.init,
                  frozen=("unet",) if args.freeze_spatial else ())
        except InputError as e:
            print(f"train_pretrained.py: error: {e}", file=sys.stderr)
            return 2
    meta = load_model(model)[1]
    record = dict(meta["recipe"], first_loss=meta["first_loss"], last_loss=meta["last_loss"],
                  device=meta["device"], world_size=meta["world_size"])
    if args.install:
        dest = Path(__file__).resolve().parents[1] / "src" / "shdeconv" / "models" / "pretrained"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.output / "model.pt", dest / f"{PRETRAINED}.pt")
        (dest / f"{PRETRAINED}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"installed {dest / (PRETRAINED + '.pt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
