"""The ``check-gradients`` sub-command: rank the axis permutations and sign flips of a gradient
table by fibre coherence (:func:`~shdeconv.direction.check_gradients`) and write the suggested
table (FSL bvecs, or an MRtrix3 grad file when the table was given so)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .._options import add_gradient_options

__all__ = ["add_parser", "cmd_check_gradients", "format_ranking"]


#: Rows of the ranking printed (the given table's row is added when it ranks lower).
_SHOWN = 6


def add_parser(subparsers, formatter_class, common) -> argparse.ArgumentParser:
    """Add ``check-gradients`` to the sub-command ``subparsers``; ``common(p)`` adds the shared
    ``-v/-q/--nthreads/--force`` options."""
    help_ = "check the gradient table for flipped or swapped axes (fibre coherence, like dwigradcheck)"
    p = subparsers.add_parser(
        "check-gradients", help=help_,
        description=("Check the gradient table for flipped or swapped axes.\n\n"
                     "A tensor is fitted once and the 24 axis permutations and sign flips of the bvecs are\n"
                     "ranked by the spatial coherence of the fibre field they give (the fibre coherence\n"
                     "index, Schilling et al. 2019). A given table that another clearly beats is reported;\n"
                     "-o writes the suggested bvecs."),
        epilog="example:\n  shdeconv check-gradients dwi.nii.gz --bvals dwi.bval --bvecs dwi.bvec",
        formatter_class=formatter_class)
    p.add_argument("dwi", type=Path, help="4-D diffusion image: NIfTI, or MRtrix3 .mif/.mif.gz/.mih")
    add_gradient_options(p)
    p.add_argument("--mask", type=Path, default=None,
                   help="brain mask, NIfTI or MRtrix3 (default: DIPY median_otsu where the volume has background, "
                        "else every voxel with b=0 signal)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the suggested table here, in the format given (FSL bvecs, 3 rows; or an MRtrix3 "
                        "grad file): the corrected table when one is clearly better, else the table as given "
                        "(default: write nothing)")
    common(p)
    p.set_defaults(func=cmd_check_gradients)
    return p


def format_ranking(result, shown: int = _SHOWN) -> str:
    """The ranking of a :class:`~shdeconv.direction.GradientCheck` as a small text table."""
    lines = [f"{'rank':>4}  {'table':<28} {'score':>8}"]
    for i, (label, score) in enumerate(result.ranking):
        if i < shown or label == "as given":
            if i > shown:
                lines.append(f"{'...':>4}")
            lines.append(f"{i + 1:>4}  {label:<28} {score:>8.4f}")
    return "\n".join(lines)


def _fsl_text(bvecs: np.ndarray) -> str:
    """FSL bvecs text: 3 rows of ``%.6f``, one column per volume (``bvecs`` ``(G, 3)``)."""
    return "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in np.asarray(bvecs).T)


def _mrtrix_text(directions: np.ndarray, bvals: np.ndarray) -> str:
    """MRtrix3 grad text: one ``x y z b`` row per volume (world-frame ``directions`` ``(G, 3)``)."""
    return "".join(" ".join(f"{v:.6f}" for v in d) + f" {b:g}\n" for d, b in zip(np.asarray(directions), bvals))


def cmd_check_gradients(args: argparse.Namespace) -> int:
    """Run the check, print the ranking and the verdict, write ``-o``; returns 0.

    Raises
    ------
    InputError
        Unreadable or inconsistent inputs, or an ``-o`` file that exists (without ``--force``).
    """
    from .._options import check_gradient_options
    from ..io import (
        atomic_write_text,
        check_output_file,
        fsl_bvecs_to_world,
        load_dwi,
    )
    from ._gradcheck import check_gradients

    check_gradient_options(args.dwi, args.bvals, args.bvecs, args.grad)
    out = Path(args.output) if getattr(args, "output", None) is not None else None
    if out is not None:
        check_output_file(out, force=bool(getattr(args, "force", False)))
    dwi = load_dwi(args.dwi, args.bvals, args.bvecs, getattr(args, "mask", None), grad_path=args.grad)
    result = check_gradients(dwi.data, dwi.bvals, dwi.bvecs, dwi.affine, dwi.mask)
    quiet = bool(getattr(args, "quiet", False))  # then only a verdict that the table is wrong
    if not quiet:
        print(f"gradient table check of {dwi.gradient_file} ({result.n_voxels} voxels scored)")
        print(format_ranking(result))
    if not quiet or result.clearly_better:
        print(result.message)
    if out is not None:
        corrected = result.corrected_bvecs(dwi.bvecs)
        text = _fsl_text(corrected) if args.bvecs else _mrtrix_text(fsl_bvecs_to_world(corrected, dwi.affine),
                                                                     dwi.bvals)
        atomic_write_text(out, text)
        kept = "corrected" if result.clearly_better else "unchanged (no clearly better table)"
        if not quiet:
            print(f"wrote {out}: the {'bvecs' if args.bvecs else 'gradient table'} {kept}")
    return 0
