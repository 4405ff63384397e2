"""The ``shdeconv`` command line. Each sub-command is a thin layer over a library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .._options import OptionError

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with every option's default (where the help does not state it: options whose
    default is computed say so in their text) and the epilog's examples kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = bool(action.option_strings) and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _add_inputs(p: argparse.ArgumentParser, lmax: str | None = None) -> None:
    """The inputs every command takes; ``lmax``: help of ``--lmax`` (None: no such option,
    e.g. predict, whose order is the model's)."""
    p.add_argument("dwi", type=Path, help="4-D diffusion NIfTI")
    p.add_argument("--bvals", type=Path, required=True, help="FSL bvals file")
    p.add_argument("--bvecs", type=Path, required=True, help="FSL bvecs file")
    p.add_argument("--mask", type=Path, default=None,
                   help="brain mask NIfTI (default: DIPY median_otsu where the volume has background, "
                        "else every voxel with b=0 signal)")
    p.add_argument("--response-wm", type=Path, default=None, help="MRtrix3 WM response file (default: estimated)")
    p.add_argument("--response-gm", type=Path, default=None, help="MRtrix3 GM response file (needs --response-wm)")
    p.add_argument("--response-csf", type=Path, default=None, help="MRtrix3 CSF response file (needs --response-wm)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    if lmax is not None:
        p.add_argument("--lmax", type=int, default=None, help=lmax)


class _Refused(argparse.Action):
    """An option this command does not take (renamed, or another command's): using it is an
    error that says what to use instead."""

    def __init__(self, option_strings, dest, message: str = "", **kw):
        self.message = message
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {self.message}")


def _common(p: argparse.ArgumentParser, *, force: bool = True, threads: bool = True,
            threads_help: str = "CPU threads for the network and peak extraction (default: every core)") -> None:
    """Options of every command: verbosity, and where it computes or writes, threads and --force."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log progress details (default: off)")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or summary line, warnings and errors only (default: off)")
    if threads:
        p.add_argument("--nthreads", type=int, default=None, help=threads_help)
    if force:
        p.add_argument("--force", action="store_true",
                       help="overwrite the outputs of an earlier run in the output location")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="shdeconv",
        description="fODFs from diffusion MRI with equivariant spatio-hemispherical networks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shdeconv {__version__}")
    _common(parser, force=False, threads=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                              epilog=f"example:\n  {example}", formatter_class=_Formatter)

    p = command("fit", "unsupervised per-subject fit: fODFs, tissue maps and peaks",
                "shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs -o out/")
    _add_inputs(p, lmax="maximum SH order of the output fODF; orders above the response's 8 are set "
                       "by the priors (default: 16)")
    p.add_argument("--variant", default="direct", choices=["direct", "shd-tv", "shd", "rtesd", "esd"],
                   help="direct: the published objective over free per-voxel values (the most accurate "
                        "measured), or a network variant")
    p.add_argument("--model", action=_Refused, message="renamed to --variant (fit's method); "
                                                        "--model names a model file in predict")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: 300)")
    p.add_argument("--batch-size", type=int, default=None, help="networks: patches per step (default: 4)")
    p.add_argument("--patch-size", type=int, default=None,
                   help="networks: training patch and inference tile side (default: 8)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1.0 for direct, "
                                                          "1.7e-3 for networks)")
    p.add_argument("--tv-weight", type=float, default=None,
                   help="spatial TV weight (default: 0.5 for shd-tv and direct, 0 for the other variants)")
    p.add_argument("--width", type=int, default=None, help="networks: channels at the top level (default: 8; "
                                                           "published 32)")
    p.add_argument("--depth", type=int, default=None, help="networks: U-Net levels (default: 2; published 4)")
    p.add_argument("--init", default=None, choices=["linear", "csd"],
                   help="direct only: start from the linear deconvolution or from DIPY CSD (default: linear)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTDIR/checkpoint.pt (refused if it belongs to another run)")
    p.add_argument("--denoise", default="mppca", choices=["none", "mppca"],
                   help="DIPY MP-PCA first (the accuracy benchmark found it helps the fit; none to skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_fit)

    p = command("csd", "the same inputs and outputs computed with DIPY CSD / MSMT-CSD",
                "shdeconv csd dwi.nii.gz --bvals bvals --bvecs bvecs -o out_csd/")
    _add_inputs(p, lmax="maximum SH order of the CSD fODF (default: 8)")
    p.add_argument("--algorithm", default="auto", choices=["auto", "ssst", "msmt"],
                   help="single-shell CSD or multi-shell multi-tissue CSD (auto: by the number of shells)")
    p.add_argument("--denoise", default="none", choices=["none", "mppca"], help="denoise with DIPY MP-PCA first")
    _common(p, threads_help="CSD worker processes (volumes of 20,000 voxels or more) and peak-extraction threads "
                            "(default: every core)")
    p.set_defaults(func=cmd_csd)

    p = command("predict", "fODFs in one pass from a trained network (default: the shipped model)",
                "shdeconv predict dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ --finetune 50")
    _add_inputs(p)
    p.add_argument("--model", type=Path, default=None, help="model.pt from `shdeconv train` (default: the shipped one)")
    p.add_argument("--finetune", type=int, default=0,
                   help="steps on this subject first: the unsupervised loss plus the model's own prediction "
                        "as a prior")
    p.add_argument("--patch-size", type=int, default=None,
                   help="inference tile side (default: the model's training patch size)")
    p.add_argument("--tile", action=_Refused, message="renamed to --patch-size")
    p.add_argument("--denoise", default="none", choices=["none", "mppca"],
                   help="DIPY MP-PCA first (the shipped model was trained on raw signals)")
    p.add_argument("--overlap", type=float, default=None,
                   help="tile overlap fraction (default: 0.25; 0.125 is faster on whole brains)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass of each tile worker (default: from free memory and, on a CPU, "
                        "the cache; a CPU runs up to 4 workers sharing the threads)")
    p.add_argument("--batch", action=_Refused, message="renamed to --batch-size")
    p.add_argument("--lmax", action=_Refused, message="predict writes the order the model was trained for; "
                                                      "`shdeconv fit --lmax N` fits another")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the fine-tuning patches")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_predict)

    p = command("train", "train one network on many subjects (torchrun for several processes/GPUs)",
                "torchrun --nproc_per_node 2 -m shdeconv train sub-*/ -o model/")
    p.add_argument("subjects", type=Path, nargs="+",
                   help="subject folders: dwi.nii.gz, bvals, bvecs [, mask.nii.gz, response_*.txt, truth/]")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (model.pt, logs)")
    p.add_argument("--variant", default="shd-tv", choices=["shd-tv", "shd", "rtesd", "esd"], help="network variant")
    p.add_argument("--model", action=_Refused, message="renamed to --variant (the network variant to train)")
    p.add_argument("--iterations", type=int, default=2000, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=4, help="patches per step and process")
    p.add_argument("--patch-size", type=int, default=8, help="side of the training patches")
    p.add_argument("--lr", type=float, default=1.7e-3, help="Adam learning rate")
    p.add_argument("--width", type=int, default=8, help="channels at the top level")
    p.add_argument("--depth", type=int, default=2, help="U-Net levels")
    p.add_argument("--supervised-weight", type=float, default=0.0,
                   help="weight of the ground-truth term for subjects with truth/ (phantoms)")
    p.add_argument("--tv-weight", type=float, default=None,
                   help="spatial TV weight (default: 0.5 for shd-tv, 0 for the other variants)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between train_log.jsonl records")
    p.add_argument("--amp", action="store_true", help="bfloat16 mixed precision (CUDA only)")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the memory-mapped subject caches (default: OUTDIR/cache)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the patch sampling")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTDIR/checkpoint.pt (refused if it belongs to another run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = command("demo", "simulate a phantom, run predict, fit and csd on it, print their accuracy",
                "shdeconv demo -o demo_out")
    p.add_argument("-o", "--output", type=Path, default=Path("demo_out"), help="output directory")
    p.add_argument("--quick", action="store_true", help="a smaller phantom and fewer iterations (for tests)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom and the fits")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = command("benchmark", "the accuracy suite: phantoms x schemes x SNR, every method, tables and figures",
                "shdeconv benchmark -o bench_out/accuracy --quick")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (rerun to resume)")
    p.add_argument("--quick", action="store_true", help="small phantoms, few iterations and cells (minutes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms and the fits")
    p.add_argument("--device", default="auto", help="device of the network fits: auto, cpu or cuda")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations of every network fit (default: the suite's)")
    p.add_argument("--methods", default=None, help="comma-separated subset, e.g. csd,csd+mppca,shd-tv (default: all)")
    p.add_argument("--model", default=None, help="model file for the predict methods (default: the shipped one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _common(p, force=False)
    p.set_defaults(func=cmd_benchmark)

    p = command("track", "deterministic or probabilistic tractography from OUTDIR/fodf.nii.gz (DIPY)",
                "shdeconv track out/ -o out/tracks.trk --algorithm prob")
    p.add_argument("fit_dir", type=Path, help="directory written by fit, predict or csd")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .trk or .tck file")
    p.add_argument("--algorithm", default="det", choices=["det", "prob"], help="DIPY direction getter")
    p.add_argument("--seeds-per-voxel", type=int, default=1,
                   help="seeds in every seed voxel: its centre for 1, else that many at random positions")
    p.add_argument("--step-size", type=float, default=0.5, help="in mm")
    p.add_argument("--max-angle", type=float, default=30.0, help="degrees")
    p.add_argument("--wm-threshold", type=float, default=0.25, help="seed and stop where the WM fraction is below")
    p.add_argument("--seed", type=int, default=0, help="seed of the random seeds and the probabilistic getter")
    _common(p, threads=False)
    p.set_defaults(func=cmd_track)

    p = command("simulate", "write a phantom with known fibres (NIfTI + bvals/bvecs + truth)",
                "shdeconv simulate phantom/ --scheme clinical --snr 20 --seed 3")
    p.add_argument("output", type=Path, help="output directory")
    p.add_argument("--kind", default="spatial", choices=["spatial", "voxelwise"],
                   help="bundles with spatial structure, or independent random voxels")
    p.add_argument("--scheme", default="clinical", choices=["clinical", "sparse", "multishell", "b2000", "b3000"],
                   help="acquisition scheme")
    p.add_argument("--snr", type=float, default=20.0, help="b=0 SNR of pure white matter")
    p.add_argument("--seed", type=int, default=0, help="seed of the geometry, directions and noise")
    p.add_argument("--quick", action="store_true", help="a small phantom")
    _common(p, threads=False)
    p.set_defaults(func=cmd_simulate)

    p = command("evaluate", "score a prediction against a phantom's ground truth", "shdeconv evaluate out/ phantom/")
    p.add_argument("pred_dir", type=Path, help="directory written by fit, predict or csd")
    p.add_argument("truth_dir", type=Path, help="phantom directory written by simulate")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    _common(p, threads=False)
    p.set_defaults(func=cmd_evaluate)
    from ..bids import add_parser as add_bids_parser

    add_bids_parser(sub, _Formatter, _common)
    return parser


def _done(args, message: str) -> None:
    """The summary line of a command (not with --quiet)."""
    if not getattr(args, "quiet", False):
        print(message)


def _progress(args) -> bool:
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def _responses(args) -> dict | None:
    if args.response_wm is None:
        if args.response_gm or args.response_csf:
            raise OptionError("--response-gm/--response-csf need --response-wm too")
        return None
    return {"wm": args.response_wm, "gm": args.response_gm, "csf": args.response_csf}


def _wrote(args, report: dict) -> None:
    _done(args, f"wrote {', '.join(report['outputs'].values())} to {args.output} "
                f"in {report['timings_s']['total']:.1f} s")


def cmd_fit(args) -> int:
    from ..fitting import DirectConfig, FitConfig, default_loss_weights, run_fit
    from ..models import NetworkConfig

    over = {k: getattr(args, k) for k in ("iterations", "batch_size", "patch_size", "lr") if getattr(args, k) is not None}
    direct_config = None
    if args.variant == "direct":
        if args.batch_size is not None or args.patch_size is not None:
            raise OptionError("--batch-size and --patch-size are network settings; direct fits every voxel at once")
        if args.width is not None or args.depth is not None:
            raise OptionError("--width and --depth are network settings; direct has no network")
        extra = {k: v for k, v in (("lmax", args.lmax), ("init", args.init)) if v is not None}
        direct_config = DirectConfig(**over, **extra)
        over = {}
    elif args.init is not None:
        raise OptionError("--init is an option of --variant direct")
    net_config = NetworkConfig(**{k: v for k, v in (("width", args.width), ("depth", args.depth)) if v is not None})
    fit_config = FitConfig(seed=args.seed, **over)
    weights = default_loss_weights(args.variant, tv=args.tv_weight)
    report = run_fit(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask, response_files=_responses(args),
                     variant=args.variant, lmax=args.lmax, device=args.device, fit_config=fit_config,
                     net_config=net_config, loss_weights=weights, resume=args.resume, progress=_progress(args),
                     denoise=args.denoise, direct_config=direct_config, force=args.force)
    _wrote(args, report)
    return 0


def cmd_csd(args) -> int:
    from ..fitting import run_csd

    report = run_csd(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask, response_files=_responses(args),
                     lmax=8 if args.lmax is None else args.lmax, algorithm=args.algorithm, denoise=args.denoise,
                     n_jobs=args.nthreads or -1, force=args.force)
    _wrote(args, report)
    return 0


def cmd_predict(args) -> int:
    from ..fitting import run_predict
    from ..inference import DEFAULT_TILE_OVERLAP

    report = run_predict(args.dwi, args.bvals, args.bvecs, args.output, mask=args.mask,
                         response_files=_responses(args), model=args.model, finetune=args.finetune,
                         device=args.device, tile=args.patch_size,
                         overlap=DEFAULT_TILE_OVERLAP if args.overlap is None else args.overlap,
                         batch=args.batch_size, seed=args.seed, progress=_progress(args), denoise=args.denoise,
                         force=args.force)
    _wrote(args, report)
    return 0


def cmd_train(args) -> int:
    from ..fitting import default_loss_weights
    from ..models import NetworkConfig
    from ..training import TrainConfig, train

    weights = default_loss_weights(args.variant, tv=args.tv_weight, supervised=args.supervised_weight)
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size,
                         lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         log_every=args.log_every, amp=args.amp)
    net_config = NetworkConfig(variant=args.variant, width=args.width, depth=args.depth, inputs="linear")
    summary = train(args.subjects, args.output, net_config=net_config, weights=weights, config=config,
                    device=args.device, resume=args.resume, progress=_progress(args), cache_dir=args.cache,
                    force=args.force)
    if int(os.environ.get("RANK", "0")) == 0:
        _done(args, f"trained {summary['iterations']} steps on {len(args.subjects)} subjects "
                    f"(loss {summary['first_loss']:.4g} -> {summary['last_loss']:.4g}); "
                    f"wrote {args.output / 'model.pt'}")
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo

    table = run_demo(args.output, quick=args.quick, seed=args.seed, device=args.device, progress=_progress(args),
                     force=args.force)
    print(table)
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
    _done(args, f"benchmark: networks at {config.fit_iterations} iterations; estimated {est['total'] / 60:.0f} min "
                f"on a 2-core CPU; results in {args.output}")
    sys.stdout.flush()
    results = run_benchmark(args.output, size=config.size, seed=config.seed, device=config.device,
                            iterations=config.iterations, methods=config.methods, progress=_progress(args),
                            model=config.model)
    print(format_bars(results["bars"]))
    for f in results["failures"]:
        print(f"shdeconv: {f['cell']}/{f['method']} failed: {f['error']}", file=sys.stderr)
    _done(args, f"wrote {args.output / 'results.md'}, results.json and {len(results['figures'])} figures "
                f"in {results['wall_seconds'] / 60:.1f} min")
    return 1 if results["failures"] else 0


def cmd_track(args) -> int:
    from ..io import refuse_earlier_outputs
    from ..tracking import track

    refuse_earlier_outputs(args.output.parent, [args.output.name], force=args.force)
    n = track(args.fit_dir, args.output, algorithm=args.algorithm, seeds_per_voxel=args.seeds_per_voxel,
              step_size=args.step_size, max_angle=args.max_angle, wm_threshold=args.wm_threshold, seed=args.seed)
    _done(args, f"wrote {n} streamlines to {args.output}")
    return 0


def cmd_simulate(args) -> int:
    from ..io import refuse_earlier_outputs
    from ..sim import PHANTOM_FILES, simulate_to_dir

    refuse_earlier_outputs(args.output, PHANTOM_FILES, force=args.force)
    out = simulate_to_dir(args.output, kind=args.kind, scheme=args.scheme, snr=args.snr, seed=args.seed,
                          size="quick" if args.quick else "default")
    _done(args, f"wrote phantom to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate_dirs, format_scores
    from ..io import refuse_earlier_outputs

    if args.json:
        refuse_earlier_outputs(args.json.parent, [args.json.name], force=args.force)
    scores = evaluate_dirs(args.pred_dir, args.truth_dir)
    print(format_scores(scores, str(args.pred_dir)))
    if args.json:
        from ..io import atomic_write_text

        atomic_write_text(args.json, json.dumps(scores, indent=2, default=float))
    return 0


#: Commands whose interrupted work continues where it stopped, and how.
_RESUMABLE = {"fit": "rerun with --resume to continue from the last checkpoint",
              "train": "rerun with --resume to continue from the last checkpoint",
              "benchmark": "rerun the same command to continue with the cells not yet done"}


def main(argv: list[str] | None = None) -> int:
    from ..io import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(level=logging.INFO if verbose and not quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("default")
    try:
        if getattr(args, "nthreads", None) is not None:
            if args.nthreads < 1:
                raise OptionError(f"--nthreads must be >= 1, got {args.nthreads}")
            import torch

            torch.set_num_threads(args.nthreads)
        return args.func(args)
    except (InputError, OptionError) as e:
        print(f"shdeconv: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:  # not about a path the user gave: a bug or the system's, with its traceback
            raise
        print(f"shdeconv: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(_OOM_HINT.format(what="the machine's memory"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = _RESUMABLE.get(args.command)
        print("shdeconv: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise
        print(_OOM_HINT.format(what="the GPU's memory"), file=sys.stderr)
        return 1


_OOM_HINT = ("shdeconv: error: out of {what}; lower --batch-size, use --device cpu (a CPU has more memory than "
             "most GPUs), or give a tighter --mask")
