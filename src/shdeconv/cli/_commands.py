"""The ``shdeconv`` commands: each is a thin layer over a library function."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from .._options import OptionError, check_gradient_options

__all__ = [
    "cmd_benchmark",
    "cmd_csd",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_fit",
    "cmd_predict",
    "cmd_simulate",
    "cmd_track",
    "cmd_train",
]


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


def _inputs(args) -> dict:
    """The input files of fit, csd and predict, as keywords of their ``run_*`` functions, after
    checking that the gradient table is given once."""
    check_gradient_options(args.dwi, args.bvals, args.bvecs, args.grad)
    return {"dwi": args.dwi, "bvals": args.bvals, "bvecs": args.bvecs, "grad": args.grad, "mask": args.mask,
            "response_files": _responses(args)}


def _given(args, *names: str) -> dict:
    """The options among ``names`` that were given on the command line."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


def cmd_fit(args) -> int:
    from ..fitting import (
        NETWORK_INITS,
        DirectConfig,
        FitConfig,
        default_loss_weights,
        run_fit,
    )
    from ..models import NetworkConfig

    over = _given(args, "iterations", "batch_size", "patch_size", "lr", "seed")
    direct_config = fit_config = None
    if args.variant == "direct":
        if args.batch_size is not None or args.patch_size is not None:
            raise OptionError("--batch-size and --patch-size are network settings; direct fits every voxel at once")
        if args.width is not None or args.depth is not None or args.scale is not None:
            raise OptionError("--scale, --width and --depth are network settings; direct has no network")
        if args.init in NETWORK_INITS:
            raise OptionError(f"--init {args.init} starts a network; --variant direct starts from auto, predict, "
                              "linear or csd")
        if args.seed is not None:
            raise OptionError("--seed seeds a network's weights and patches; --variant direct has nothing random")
        direct_config = DirectConfig(**over, **_given(args, "lmax", "init"))
    else:
        if args.init is not None and args.init not in NETWORK_INITS:
            raise OptionError(f"--init {args.init} starts --variant direct; a network starts from "
                              f"{' or '.join(NETWORK_INITS)}")
        fit_config = FitConfig(**over, **_given(args, "init"))
    net_config = NetworkConfig.at_scale(args.scale or "laptop", **_given(args, "width", "depth"))
    weights = default_loss_weights(args.variant, tv=args.tv_weight, **({"init": fit_config.init} if fit_config else {}))
    report = run_fit(outdir=args.output, **_inputs(args), variant=args.variant, lmax=args.lmax, device=args.device,
                     fit_config=fit_config, net_config=net_config, loss_weights=weights, resume=args.resume,
                     progress=_progress(args), denoise=args.denoise, direct_config=direct_config, force=args.force)
    _wrote(args, report)
    return 0


def cmd_csd(args) -> int:
    from ..fitting import run_csd

    report = run_csd(outdir=args.output, **_inputs(args), lmax=8 if args.lmax is None else args.lmax,
                     algorithm=args.algorithm, denoise=args.denoise, n_jobs=args.nthreads or -1, force=args.force)
    _wrote(args, report)
    return 0


def cmd_predict(args) -> int:
    from ..fitting import run_predict
    from ..inference import DEFAULT_TILE_OVERLAP

    if args.seed is not None and not args.finetune:
        raise OptionError("--seed seeds the fine-tuning patches; without --finetune nothing is random")
    report = run_predict(outdir=args.output, **_inputs(args), model=args.model, finetune=args.finetune,
                         device=args.device, tile=args.patch_size,
                         overlap=DEFAULT_TILE_OVERLAP if args.overlap is None else args.overlap,
                         batch=args.batch_size, progress=_progress(args), denoise=args.denoise,
                         precision=args.precision, force=args.force, **_given(args, "seed"))
    _wrote(args, report)
    return 0


def cmd_train(args) -> int:
    from ..fitting import default_loss_weights
    from ..losses import LossWeights
    from ..models import NetworkConfig, load_model, pretrained_path
    from ..training import TrainConfig, train

    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, patch_size=args.patch_size,
                         lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                         log_every=args.log_every, amp=args.amp)
    architecture = _given(args, "variant", "scale", "width", "depth", "nside", "lmax")
    init = None
    if args.init is not None:
        if architecture or args.skip:
            given = ", ".join("--" + k for k in [*architecture, *(["skip"] if args.skip else [])])
            raise OptionError(f"--init takes the network's architecture from {args.init}; drop {given}")
        init = pretrained_path() if args.init == "shipped" else Path(args.init)
        net, meta = load_model(init)  # a missing or foreign file: InputError naming it
        net_config = net.config
        recorded = {k: v for k, v in (meta.get("loss_weights") or {}).items() if k in LossWeights.__dataclass_fields__}
        given = {k: v for k, v in (("tv", args.tv_weight), ("supervised", args.supervised_weight)) if v is not None}
        weights = (LossWeights(**{**recorded, **given}) if recorded
                   else default_loss_weights(net_config.variant, tv=args.tv_weight, supervised=args.supervised_weight))
    else:
        net_config = NetworkConfig.at_scale(args.scale or "laptop", variant=args.variant or "shd-tv",
                                            lmax=16 if args.lmax is None else args.lmax, skip=args.skip,
                                            inputs="linear", **_given(args, "width", "depth", "nside"))
        weights = default_loss_weights(net_config.variant, tv=args.tv_weight, supervised=args.supervised_weight)
    if args.freeze_spatial and (init is None or not net_config.gate):
        raise OptionError("--freeze-spatial needs --init of a gated model (a voxel-wise path beside the spatial "
                          "one); " + ("no --init was given" if init is None else f"{args.init} has no voxel-wise path"))
    summary = train(args.subjects, args.output, net_config=net_config, weights=weights, config=config,
                    device=args.device, resume=args.resume, progress=_progress(args), cache_dir=args.cache,
                    force=args.force, init=init, frozen=("unet",) if args.freeze_spatial else ())
    if int(os.environ.get("RANK", "0")) == 0:
        start = f" from {init}" if init is not None else ""
        _done(args, f"trained {summary['iterations']} steps{start} on {len(args.subjects)} subjects "
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
                             iterations=args.iterations, methods=args.methods, cells=args.cells, model=args.model)
    est = estimate_seconds(config)
    _done(args, f"benchmark: networks at {config.fit_iterations} iterations; estimated {est['total'] / 60:.0f} min "
                f"on a 2-core CPU; results in {args.output}")
    sys.stdout.flush()
    results = run_benchmark(args.output, size=config.size, seed=config.seed, device=config.device,
                            iterations=config.iterations, methods=config.methods, cells=config.cells,
                            progress=_progress(args), model=config.model)
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
    from ..sim import PHANTOM_FILES, PhantomVariation, simulate_to_dir

    flags = {"dispersion_deg": "--dispersion", "diffusivity_jitter": "--diffusivity-jitter",
             "noise_fwhm": "--noise-fwhm", "bias_field": "--bias-field"}
    try:
        variation = PhantomVariation(**{field: getattr(args, flag[2:].replace("-", "_"))
                                        for field, flag in flags.items()})
    except OptionError as e:  # name the option the user typed, not the field
        message = str(e)
        for field, flag in flags.items():
            message = message.replace(field, flag)
        raise OptionError(message) from None
    if not (math.isfinite(args.snr) and args.snr > 0):  # also NaN; a noise-free phantom is not a phantom of this kind
        raise OptionError(f"--snr must be a positive number, got {args.snr}")
    if args.seed < 0:
        raise OptionError(f"--seed must be >= 0, got {args.seed}")
    refuse_earlier_outputs(args.output, PHANTOM_FILES, force=args.force)
    out = simulate_to_dir(args.output, kind=args.kind, scheme=args.scheme, snr=args.snr, seed=args.seed,
                          size="quick" if args.quick else "default", variation=variation)
    _done(args, f"wrote phantom to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate_dirs, format_scores
    from ..io import check_output_file

    if args.json:
        check_output_file(args.json, force=args.force)
    scores = evaluate_dirs(args.pred_dir, args.truth_dir)
    print(format_scores(scores, str(args.pred_dir)))
    if args.json:
        from ..io import atomic_write_text

        atomic_write_text(args.json, json.dumps(scores, indent=2, default=float))
    return 0


#: Commands whose interrupted work continues where it stopped, and how.
