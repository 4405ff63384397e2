"""The ``shdeconv`` argument parser: every command, its options (with help and defaults) and
the options all commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._options import DENOISERS, FIT_DENOISE, PRECISIONS, add_gradient_options
from ._commands import (
    cmd_benchmark,
    cmd_csd,
    cmd_demo,
    cmd_evaluate,
    cmd_fit,
    cmd_predict,
    cmd_simulate,
    cmd_track,
    cmd_train,
)

__all__ = ["build_parser"]

EXAMPLES = """\
examples:
  shdeconv demo -o demo_out
  shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs --mask mask.nii.gz -o out/
  shdeconv fit dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ --resume
  shdeconv predict dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ [--finetune 50]
  shdeconv predict dwi.mif --mask mask.mif -o out/   (MRtrix3 image: its header's gradient table)
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
    p.add_argument("dwi", type=Path, help="4-D diffusion image: NIfTI, or MRtrix3 .mif/.mif.gz/.mih")
    add_gradient_options(p)
    p.add_argument("--mask", type=Path, default=None,
                   help="brain mask (NIfTI or MRtrix3); only its bounding box (predict: its voxels) is held in memory "
                        "(default: DIPY median_otsu where the volume has background, else every voxel with "
                        "b=0 signal)")
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
    p.add_argument("--scale", default=None, choices=["laptop", "published"],
                   help="networks: laptop (default; nside 8, depth 2, width 8, K 3) or published (the paper's "
                        "nside 8, depth 4, width 32, K 5; 19x the time per step on a CPU, for a GPU)")
    p.add_argument("--width", type=int, default=None, help="networks: channels at the top level (default: the "
                                                           "scale's)")
    p.add_argument("--depth", type=int, default=None, help="networks: U-Net levels (default: the scale's)")
    p.add_argument("--init", default=None, choices=["auto", "predict", "linear", "csd", "random", "direct"],
                   help="the start. direct: predict (the shipped model's prediction), linear (linear "
                        "deconvolution: no trained model), csd (DIPY CSD) or auto (default: predict on "
                        "single-shell data up to b=1500, else linear); networks: random (default) or "
                        "direct (fit --variant direct first; the network learns its solution)")
    p.add_argument("--seed", type=int, default=None,
                   help="networks: seed of the weights and the patch sampling; direct has nothing random "
                        "(default: 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTDIR/checkpoint.pt (refused if it belongs to another run)")
    p.add_argument("--denoise", default=FIT_DENOISE, choices=DENOISERS,
                   help="DIPY PCA denoising first: auto (default) runs MP-PCA where neighbouring voxels' fibres "
                        "agree, as in brains, and skips it on voxels without spatial redundancy; mppca always; "
                        "localpca: local PCA with a PCA noise map (better where the noise is correlated in "
                        "space); none to skip")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_fit)

    p = command("csd", "the same inputs and outputs computed with DIPY CSD / MSMT-CSD",
                "shdeconv csd dwi.nii.gz --bvals bvals --bvecs bvecs -o out_csd/")
    _add_inputs(p, lmax="maximum SH order of the CSD fODF (default: 8)")
    p.add_argument("--algorithm", default="auto", choices=["auto", "ssst", "msmt"],
                   help="single-shell CSD or multi-shell multi-tissue CSD (auto: by the number of shells)")
    p.add_argument("--denoise", default="none", choices=DENOISERS,
                   help="denoise first with DIPY MP-PCA or local PCA (as in fit)")
    _common(p, threads_help="CSD worker processes (volumes of 20,000 voxels or more) and peak-extraction threads "
                            "(default: every core)")
    p.set_defaults(func=cmd_csd)

    p = command("predict", "fODFs in one pass from a trained network (default: the shipped model)",
                "shdeconv predict dwi.nii.gz --bvals bvals --bvecs bvecs -o out/ --finetune 50")
    _add_inputs(p)
    p.add_argument("--model", type=Path, default=None, help="model.pt from `shdeconv train` (default: the shipped one)")
    p.add_argument("--finetune", type=int, default=0,
                   help="steps on this subject first: the unsupervised loss plus the model's own prediction "
                        "as a prior (on held-out phantoms this keeps the accuracy rather than raising it; "
                        "`fit` is the refinement that raises it)")
    p.add_argument("--patch-size", type=int, default=None,
                   help="inference tile side (default: the model's training patch size)")
    p.add_argument("--tile", action=_Refused, message="renamed to --patch-size")
    p.add_argument("--denoise", default="none", choices=DENOISERS,
                   help="DIPY MP-PCA or local PCA first, as in fit; auto raises the shipped model's accuracy on "
                        "single-shell data for MP-PCA's time")
    p.add_argument("--overlap", type=float, default=None,
                   help="tile overlap fraction (default: 0.25; 0.125 is faster on whole brains)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass of each tile worker (default: from free memory and, on a CPU, "
                        "the cache; a CPU runs up to 4 workers sharing the threads)")
    p.add_argument("--batch", action=_Refused, message="renamed to --batch-size")
    p.add_argument("--lmax", action=_Refused, message="predict writes the order the model was trained for; "
                                                      "`shdeconv fit --lmax N` fits another")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="number format of the network pass; bfloat16 makes its matrix products cheaper on "
                        "devices with bfloat16 instructions (AVX512-BF16 or AMX CPUs, GPUs), with fODFs within "
                        "about 1.5%% of float32's")
    p.add_argument("--seed", type=int, default=None, help="with --finetune: seed of its patches (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_predict)

    p = command("train", "train one network on many subjects (torchrun for several processes/GPUs)",
                "torchrun --nproc_per_node 2 -m shdeconv train sub-*/ -o model/")
    p.add_argument("subjects", type=Path, nargs="+",
                   help="subject folders: dwi.nii.gz, bvals, bvecs [, mask.nii.gz, response_*.txt, truth/]")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (model.pt, logs)")
    p.add_argument("--variant", default=None, choices=["shd-tv", "shd", "rtesd", "esd"],
                   help="network variant (default: shd-tv)")
    p.add_argument("--model", action=_Refused, message="renamed to --variant (the network variant to train)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this model.pt ('shipped': the shipped model): its architecture and, unless "
                        "--tv-weight/--supervised-weight are given, its loss weights")
    p.add_argument("--freeze-spatial", action="store_true",
                   help="with --init of a gated model: keep its spatial path as it is, train its voxel-wise path")
    p.add_argument("--iterations", type=int, default=2000, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=4, help="patches per step and process")
    p.add_argument("--patch-size", type=int, default=8, help="side of the training patches")
    p.add_argument("--lr", type=float, default=1.7e-3, help="Adam learning rate")
    p.add_argument("--scale", default=None, choices=["laptop", "published"],
                   help="network size: laptop (the default: nside 8, depth 2, width 8, K 3) or published (nside 8, "
                        "depth 4, width 32, K 5)")
    p.add_argument("--width", type=int, default=None, help="channels at the top level (default: the scale's)")
    p.add_argument("--depth", type=int, default=None, help="U-Net levels (default: the scale's)")
    p.add_argument("--nside", type=int, default=None,
                   help="HEALPix resolution of the sphere grid (default: the scale's; 4 for speed)")
    p.add_argument("--lmax", type=int, default=None,
                   help="SH order of the output fODF (default 16; the responses stop at 8; at most 12 with --nside 4)")
    p.add_argument("--skip", action="store_true",
                   help="add the linear deconvolution before the Softplus head (the network learns a "
                        "correction to it)")
    p.add_argument("--supervised-weight", type=float, default=None,
                   help="weight of the ground-truth term for subjects with truth/ (phantoms; default 0)")
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
    p.add_argument("--cells", default=None,
                   help="comma-separated subset of cells, e.g. spatial-clinical-snr20 (the bar case, with the "
                        "tractography evaluation) (default: all)")
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
    p.add_argument("--step-size", type=float, default=0.5, help="in mm (> 0)")
    p.add_argument("--max-angle", type=float, default=30.0, help="largest turn per step, degrees (0 to 90)")
    p.add_argument("--wm-threshold", type=float, default=0.25, help="seed and stop where the WM fraction is below")
    p.add_argument("--seed", type=int, default=0, help="seed of the random seeds and the probabilistic getter")
    _common(p, threads=False)
    p.set_defaults(func=cmd_track)

    p = command("simulate", "write a phantom with known fibres (NIfTI + bvals/bvecs + truth)",
                "shdeconv simulate phantom/ --scheme clinical --snr 20 --seed 3")
    p.add_argument("output", type=Path, help="output directory")
    p.add_argument("--kind", default="spatial", choices=["spatial", "voxelwise"],
                   help="bundles with spatial structure, or independent random voxels")
    p.add_argument("--scheme", default="clinical",
                   choices=["clinical", "sparse", "multishell", "b2000", "b3000", "ukbiobank"],
                   help="acquisition scheme")
    p.add_argument("--snr", type=float, default=20.0, help="b=0 SNR of pure white matter")
    p.add_argument("--seed", type=int, default=0, help="seed of the geometry, directions and noise")
    p.add_argument("--quick", action="store_true", help="a small phantom")
    g = p.add_argument_group("departures from the clean phantom (all off by default; same truth)")
    g.add_argument("--dispersion", type=float, default=0.0, metavar="DEG",
                   help="fibre dispersion: each fibre a fan of sticks, Rayleigh angle of this scale")
    g.add_argument("--diffusivity-jitter", type=float, default=0.0, metavar="SD",
                   help="per-voxel log-normal spread of the diffusivities (0.15: about 15%%)")
    g.add_argument("--noise-fwhm", type=float, default=0.0, metavar="VOXELS",
                   help="spatially correlated noise: Gaussian smoothing of this FWHM, same SD")
    g.add_argument("--bias-field", type=float, default=0.0, metavar="A",
                   help="smooth receive bias field 1 + A g(x), max |g| = 1 (signal only, not noise)")
    _common(p, threads=False)
    p.set_defaults(func=cmd_simulate)

    p = command("evaluate", "score a prediction against a phantom's ground truth", "shdeconv evaluate out/ phantom/")
    p.add_argument("pred_dir", type=Path, help="directory written by fit, predict or csd")
    p.add_argument("truth_dir", type=Path, help="phantom directory written by simulate")
    p.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    _common(p, threads=False)
    p.set_defaults(func=cmd_evaluate)
    from ..bids import add_parser as add_bids_parser
    from ..direction._gradcheck_cli import add_parser as add_gradcheck_parser

    add_bids_parser(sub, _Formatter, _common)
    add_gradcheck_parser(sub, _Formatter, _common)
    return parser
