"""The ``shdeconv bids BIDS_DIR OUTPUT_DIR participant`` command (the BIDS-App calling convention)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._options import DENOISERS, FIT_DENOISE, PRECISIONS

__all__ = ["add_parser", "cmd_bids"]

_HELP = "run predict, fit or csd on every participant of a BIDS dataset (BIDS-App convention)"
_DESCRIPTION = """\
Run predict, fit or csd on every diffusion series of a BIDS dataset (raw BIDS, or a derivative
dataset such as QSIPrep's, whose desc-brain masks are used) and write the results as the
BIDS-Derivatives dataset OUTPUT_DIR/shdeconv/ under BEP016 names
(sub-X[_ses-Y]_model-<method>_param-fod_label-WM_dwimap.nii.gz, ...). Series whose outputs
exist are skipped unless --force; a failing series is reported and the others still run
(exit status 1 if any failed)."""
_EPILOG = "example:\n  shdeconv bids /data/bids /data/derivatives participant --participant-label 01"


def add_parser(subparsers, formatter_class, common) -> argparse.ArgumentParser:
    """Add the ``bids`` command to ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The main parser's sub-commands.
    formatter_class : type
        Help formatter of the other commands.
    common : callable
        ``common(parser)`` adds the options every command shares (``-v``, ``-q``,
        ``--nthreads``, ``--force``).

    Returns
    -------
    argparse.ArgumentParser
        The new sub-parser.
    """
    p = subparsers.add_parser("bids", help=_HELP, description=_DESCRIPTION, epilog=_EPILOG,
                              formatter_class=formatter_class)
    p.add_argument("bids_dir", type=Path,
                   help="root of a BIDS dataset (raw, or a derivative dataset such as QSIPrep's output)")
    p.add_argument("output_dir", type=Path, help="output directory; the results go to OUTPUT_DIR/shdeconv/")
    p.add_argument("analysis_level", choices=["participant"],
                   help="BIDS-App analysis level (only participant: one job per diffusion series)")
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL",
                   help="only these participants, with or without sub- (default: all)")
    p.add_argument("--session-label", nargs="+", default=None, metavar="LABEL",
                   help="only these sessions, with or without ses- (default: all)")
    p.add_argument("--method", default="predict", choices=["predict", "fit", "csd"],
                   help="the job run on each series, with its own settings: the shipped network, the per-subject "
                        "fit, or DIPY CSD")
    p.add_argument("--model", type=Path, default=None,
                   help="model file for --method predict (default: the shipped one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (predict and fit)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="number format of predict's network pass (as shdeconv predict --precision)")
    p.add_argument("--denoise", default=None, choices=DENOISERS,
                   help=f"denoising before the job (default: the command's own: {FIT_DENOISE} for fit, none "
                        "for predict and csd; QSIPrep's output is usually denoised already)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    common(p)
    p.set_defaults(func=cmd_bids)
    return p


def cmd_bids(args) -> int:
    """Run the ``bids`` command; 0 when every series is done or skipped, 1 when any failed."""
    from ._app import run_bids

    quiet = getattr(args, "quiet", False)
    summary = run_bids(args.bids_dir, args.output_dir, participant_label=args.participant_label,
                       session_label=args.session_label, method=args.method, model=args.model, device=args.device,
                       denoise=args.denoise, precision=args.precision,
                       force=getattr(args, "force", False),
                       progress=not (getattr(args, "no_progress", False) or quiet), quiet=quiet,
                       n_jobs=getattr(args, "nthreads", None) or -1)
    if not quiet:
        print(f"shdeconv bids: {summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed; "
              f"outputs in {summary['output_dir']}")
    return 1 if summary["failed"] else 0
