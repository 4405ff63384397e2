"""The ``shdeconv`` command line. Each sub-command is a thin layer over a library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  shdeconv demo -o demo_out
  shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs --mask mask.nii.gz -o out/
  shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ --resume
  shdeconv predict dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ [--finetune 50]
  torchrun --nproc_per_node 2 -m shdeconv train sub-01/ sub-02/ -o model/
  shdeconv csd dwi.nii.gz --bvals bvals --bvecs bvecs -o out_csd/ --denoise mppca
  shdeconv track out/ -o out/tracks.trk --algorithm prob
  shdeconv simulate phantom/ --scheme clinical --snr 20 --seed 3
  shdeconv evaluate out/ phantom/
  shdeconv benchmark -o bench_out/accuracy [--quick]
  mrview dwi.nii.gz -odf.load_sh out/fodf.nii.gz     (MRtrix3 reads our files directly)
"""


def _add_inputs(p: argparse.ArgumentParser, lmax: str | None = None) -> None:
    """The inputs every command takes; ``lmax``: help of ``--lmax`` (None: no such option,
    e.g. predict, whose order is the model's)."""
    p.add_argument("dwi", type=Path, help="4-D diffusion NIfTI")
    p.add_argument("--bvals", type=Path, required=True, help="FSL bvals file")
    p.add_argument("--bvecs", type=Path, required=True, help="FSL bvecs file")
    p.add_argument("--mask", type=Path, default=None, help="brain mask NIfTI (default: DIPY median_otsu)")
    p.add_argument("--response-wm", type=Path, default=None, help="MRtrix3 WM response file (default: estimated)")
    p.add_argument("--response-gm", type=Path, default=None, help="MRtrix3 GM response file")
    p.add_argument("--response-csf", type=Path, default=None, help="MRtrix3 CSF response file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    if lmax is not None:
        p.add_argument("--lmax", type=int, default=None, help=lmax)


def _responses(args) -> dict | None:
    if args.response_wm is None:
        if args.response_gm or args.response_csf:
            raise ValueError("--response-gm/--response-csf need --response-wm too")
        return None
    return {"wm": args.response_wm, "gm": args.response_gm, "csf": args.response_csf}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shdeconv",
        description="fODFs from diffusion MRI with equivariant spatio-hemispherical networks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("fit", help="unsupervised per-subject fit: fODFs, tissue maps and peaks",
                       epilog="example: shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs -o out/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(p, lmax="maximum SH order of the output fODF; orders above the response's 8 are set "
                       "by the priors (default 16)")
    p.add_argument("--model", default="direct", choices=["direct", "shd-tv", "shd", "rtesd", "esd"],
                   help="direct: the published objective over free per-voxel values (the default: the most "
                        "accurate measured), or a network variant")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default 300)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per step (default 4)")
    p.add_argument("--patch-size", type=int, default=None, help="training patch and inference tile side")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1.7e-3; direct 1.0)")
    p.add_argument("--tv-weight", type=float, default=None, help="spatial TV weight (shd-tv and direct; default 0.5)")
    p.add_argument("--width", type=int, default=None, help="networks: channels at the top level (default 8; published 32)")
    p.add_argument("--depth", type=int, default=None, help="networks: U-Net levels (default 2; published 4)")
    p.add_argument("--init", default=None, choices=["linear", "csd"],
                   help="direct only: start from the linear deconvolution or from DIPY CSD (default linear)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/checkpoint.pt")
    p.add_argument("--denoise", default="mppca", choices=["none", "mppca"],
                   help="DIPY MP-PCA first (default: the accuracy benchmark found it helps the fit; none to skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("csd", help="the same inputs and outputs computed with DIPY CSD / MSMT-CSD",
                       epilog="example: shdeconv csd dwi.nii.gz --bvals bvals --bvecs bvecs -o out_csd/")
    _add_inputs(p, lmax="maximum SH order of the CSD fODF (default 8)")
    p.add_argument("--algorithm", default="auto", choices=["auto", "ssst", "msmt"],
                   help="single-shell CSD or multi-shell multi-tissue CSD (auto: by the number of shells)")
    p.add_argument("--denoise", default="none", choices=["none", "mppca"], help="denoise with DIPY MP-PCA first")
    p.set_defaults(func=cmd_csd)

    p = sub.add_parser("predict", help="fODFs in one pass from a trained network (default: the shipped model)",
                       epilog="example: shdeconv predict dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ "
                              "--finetune 50")
    _add_inputs(p)
    p.add_argument("--model", type=Path, default=None, help="model.pt from `shdeconv train` (default: shipped)")
    p.add_argument("--finetune", type=int, default=0,
                   help="steps on this subject first: the unsupervised loss plus the model's own prediction "
                        "as a prior (default 0)")
    p.add_argument("--tile", type=int, default=None, help="inference tile side (default: the training patch size)")
    p.add_argument("--denoise", default="none", choices=["none", "mppca"],
                   help="DIPY MP-PCA first (default none: the shipped model was trained on raw signals)")
    p.add_argument("--overlap", type=float, default=None,
                   help="tile overlap fraction (default 0.25; 0.125 is faster on whole brains, see the README)")
    p.add_argument("--batch", type=int, default=None,
                   help="tiles per forward pass of each tile worker (default: from free memory and, on a CPU, "
                        "the cache; a CPU runs up to 4 workers sharing torch's threads, see OMP_NUM_THREADS)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="train one network on many subjects (torchrun for several processes/GPUs)",
                       epilog="example: torchrun --nproc_per_node 2 -m shdeconv train sub-*/ -o model/")
    p.add_argument("subjects", type=Path, nargs="+",
                   help="subject folders: dwi.nii.gz, bvals, bvecs [, mask.nii.gz, response_*.txt, truth/]")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (model.pt, logs)")
    p.add_argument("--model", default="shd-tv", choices=["shd-tv", "shd", "rtesd", "esd"])
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.7e-3)
    p.add_argument("--width", type=int, default=8, help="channels at the top level")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--supervised-weight", type=float, default=0.0,
                   help="weight of the ground-truth term for subjects with truth/ (phantoms)")
    p.add_argument("--tv-weight", type=float, default=None, help="spatial TV weight (shd-tv)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10, help="steps between train_log.jsonl records")
    p.add_argument("--amp", action="store_true", help="bfloat16 mixed precision (CUDA only)")
    p.add_argument("--cache", type=Path, default=None, help="folder for the memory-mapped subject caches")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTDIR/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="simulate a phantom, run fit and csd on it, print their accuracy",
                       epilog="example: shdeconv demo -o demo_out")
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"))
    p.add_argument("--quick", action="store_true", help="a smaller phantom and fewer iterations (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("benchmark", help="the accuracy suite: phantoms x schemes x SNR, every method, tables and figures",
                       epilog="example: shdeconv benchmark -o bench_out/accuracy --quick")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (rerun to resume)")
    p.add_argument("--quick", action="store_true", help="small phantoms, few iterations and cells (minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="device of the network fits: auto, cpu or cuda")
    p.add_argument("--iterations", type=int, default=None, help="iterations of every network fit (default: the suite's)")
    p.add_argument("--methods", default=None, help="comma-separated subset, e.g. csd,csd+mppca,shd-tv")
    p.add_argument("--model", default=None, help="model file for the predict methods (default: the shipped one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("track", help="deterministic or probabilistic tractography from OUTDIR/fodf.nii.gz (DIPY)",
                       epilog="example: shdeconv track out/ -o out/tracks.trk --algorithm prob")
    p.add_argument("fit_dir", type=Path, help="directory written by fit, predict or csd")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .trk or .tck file")
    p.add_argument("--algorithm", default="det", choices=["det", "prob"])
    p.add_argument("--seeds-per-voxel", type=int, default=1)
    p.add_argument("--step-size", type=float, default=0.5, help="in mm")
    p.add_argument("--max-angle", type=float, default=30.0, help="degrees")
    p.add_argument("--wm-threshold", type=float, default=0.25, help="stop where the WM fraction drops below")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("simulate", help="write a phantom with known fibres (NIfTI + bvals/bvecs + truth)",
                       epilog="example: shdeconv simulate phantom/ --scheme clinical --snr 20 --seed 3")
    p.add_argument("output", type=Path)
    p.add_argument("--kind", default="spatial", choices=["spatial", "voxelwise"])
    p.add_argument("--scheme", default="clinical", choices=["clinical", "sparse", "multishell", "b2000", "b3000"])
    p.add_argument("--snr", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small phantom")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("evaluate", help="score a prediction against a phantom's ground truth",
                       epilog="example: shdeconv evaluate out/ phantom/")
    p.add_argument("pred_dir", type=Path)
    p.add_argument("truth_dir", type=Path)
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def cmd_fit(args) -> int:
    from ..fitting import DirectConfig, FitConfig, default_loss_weights, run_fit
    from ..models import NetworkConfig

    over = {k: getattr(args, k) for k in ("iterations", "batch_size", "patch_size", "lr") if getattr(args, k) is not None}
    direct_config = None
    if args.model == "direct":
        if args.batch_size is not None or args.patch_size is not None:
            raise ValueError("--batch-size and --patch-size are network settings; direct fits every voxel at once")
        extra = {k: v for k, v in (("lmax", args.lmax), ("init", args.init)) if v is not None}
        direct_config = DirectConfig(**over, **extra)
        over = {}
    elif args.init is not None:
        raise ValueError("--init is an option of --model direct")
    if args.model == "direct" and (args.width is not None or args.depth is not None):
        raise ValueError("--width and --depth are network settings; direct has no network")
    net_config = NetworkConfig(**{k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None})
    fit_config = FitConfig(seed=args.seed, **over)
    weights = default_loss_weights(args.model, tv=args.tv_weight)
    report = run_fit(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask, response_files=_responses(args),
                     variant=args.model, lmax=args.lmax, device=args.device, fit_config=fit_config,
                     net_config=net_config, loss_weights=weights, resume=args.resume, progress=not args.no_progress,
                     denoise=args.denoise, direct_config=direct_config)
    print(f"wrote {', '.join(report['outputs'].values())} to {args.output} "
          f"in {report['timings_s']['total']:.1f} s")
    return 0


def cmd_csd(args) -> int:
    from ..fitting import run_csd

    report = run_csd(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask, response_files=_responses(args),
                     lmax=8 if args.lmax is None else args.lmax, algorithm=args.algorithm, denoise=args.denoise)
    print(f"wrote {', '.join(report['outputs'].values())} to {args.output} "
          f"in {report['timings_s']['total']:.1f} s")
    return 0


def cmd_predict(args) -> int:
    from ..fitting import DEFAULT_TILE_OVERLAP, run_predict

    report = run_predict(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask,
                         response_files=_responses(args), model=args.model, finetune=args.finetune,
                         device=args.device, tile=args.tile,
                         overlap=DEFAULT_TILE_OVERLAP if args.overlap is None else args.overlap, batch=args.batch,
                         seed=args.seed,
                         progress=not args.no_progress, denoise=args.denoise)
    print(f"wrote {', '.join(report['outputs'].values())} to {args.output} "
          f"in {report['timings_s']['total']:.1f} s")
    return 0


def cmd_train(args) -> int:
    from ..fitting import default_loss_weights
    from ..models import NetworkConfig
    from ..training import TrainConfig, train

    weights = default_loss_weights(args.model, tv=args.tv_weight, supervised=args.supervised_weight)
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size,
                         lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         log_every=args.log_every, amp=args.amp)
    net_config = NetworkConfig(variant=args.model, width=args.width, depth=args.depth, inputs="linear")
    summary = train(args.subjects, args.output, net_config=net_config, weights=weights, config=config,
                    device=args.device, resume=args.resume, progress=not args.no_progress, cache_dir=args.cache)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {summary['iterations']} steps on {len(args.subjects)} subjects "
              f"(loss {summary['first_loss']:.4g} -> {summary['last_loss']:.4g}); wrote {args.output / 'model.pt'}")
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    print(run_demo(args.output, quick=args.quick, seed=args.seed, device=args.device))
    return 0


def cmd_benchmark(args) -> int:
    from ..evaluation import (
        BenchmarkConfig,
        estimate_seconds,
        format_bars,
        run_benchmark,
    )

    config = BenchmarkConfig(size="quick" if args.quick else "default", seed=args.seed, device=args.device,
                             iterations=args.iterations, methods=args.methods, model=args.model)
    est = estimate_seconds(config)
    print(f"benchmark: networks at {config.fit_iterations} iterations; estimated {est['total'] / 60:.0f} min "
          f"on a 2-core CPU; results in {args.output}", flush=True)
    results = run_benchmark(args.output, size=config.size, seed=config.seed, device=config.device,
                            iterations=config.iterations, methods=config.methods, progress=not args.no_progress,
                            model=config.model)
    print(format_bars(results["bars"]))
    for f in results["failures"]:
        print(f"shdeconv: {f['cell']}/{f['method']} failed: {f['error']}", file=sys.stderr)
    print(f"wrote {args.output / 'results.md'}, results.json and {len(results['figures'])} figures "
          f"in {results['wall_seconds'] / 60:.1f} min")
    return 1 if results["failures"] else 0


def cmd_track(args) -> int:
    from ..tracking import track

    n = track(args.fit_dir, args.output, algorithm=args.algorithm, seeds_per_voxel=args.seeds_per_voxel,
              step_size=args.step_size, max_angle=args.max_angle, wm_threshold=args.wm_threshold, seed=args.seed)
    print(f"wrote {n} streamlines to {args.output}")
    return 0


def cmd_simulate(args) -> int:
    from ..sim import simulate_to_dir

    out = simulate_to_dir(args.output, kind=args.kind, scheme=args.scheme, snr=args.snr, seed=args.seed,
                          size="quick" if args.quick else "default")
    print(f"wrote phantom to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate_dirs, format_scores

    scores = evaluate_dirs(args.pred_dir, args.truth_dir)
    print(format_scores(scores, str(args.pred_dir)))
    if args.json:
        from ..io import atomic_write_text

        atomic_write_text(args.json, json.dumps(scores, indent=2, default=float))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..io import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(f"shdeconv {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("default")
    try:
        return args.func(args)
    except InputError as e:
        print(f"shdeconv: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"shdeconv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("shdeconv: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
