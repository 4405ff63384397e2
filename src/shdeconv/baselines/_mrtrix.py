"""MRtrix3's CSD as users run it: ``dwi2response`` + ``dwi2fod``, optionally after ``dwidenoise``.

The tools are run as subprocesses (MRtrix3 must be on ``PATH``): ``tournier`` + ``csd`` on one
shell, ``dhollander`` + ``msmt_csd`` on several. The fODF is MRtrix3's own output, already in the
MRtrix3 basis and world frame that shdeconv writes.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["dhollander_erode", "mrtrix_version", "run_mrtrix_csd"]

logger = logging.getLogger(__name__)

_MRTRIX_TOOLS = ("dwi2response", "dwi2fod", "dwidenoise")


def mrtrix_version() -> str | None:
    """MRtrix3's version when ``dwi2response``, ``dwi2fod`` and ``dwidenoise`` are on PATH, else None."""
    if not all(shutil.which(t) for t in _MRTRIX_TOOLS):
        return None
    try:
        out = subprocess.run([shutil.which("dwi2fod"), "-version"], check=False, capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("MRtrix3's dwi2fod is on PATH but does not run (%s)", e)
        return None
    m = re.search(r"dwi2fod\s+(\S+)", out.stdout)
    return m.group(1) if m else (out.stdout.strip().splitlines() or ["unknown"])[0]


def _mrtrix(args: list, cwd: Path) -> None:
    """Run one MRtrix3 command in ``cwd``; a non-zero exit raises RuntimeError with its last lines."""
    cmd = [str(a) for a in args]
    r = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {r.returncode}): {tail}")


def dhollander_erode(mask_shape) -> int:
    """``dwi2response dhollander -erode``: its default 3 passes, fewer where they would empty a thin slab."""
    return int(min(3, max(0, (min(mask_shape) - 1) // 2 - 1)))


def run_mrtrix_csd(in_dir: Path, out: Path, *, multishell: bool, denoise: bool, nthreads: int,
                   erode: int = 3) -> None:
    """``dwi2response`` + ``dwi2fod`` (and ``dwidenoise`` first) as users run them; writes ``fodf.nii.gz``.

    Parameters
    ----------
    in_dir : Path
        Holds ``dwi.nii.gz``, ``bvals``, ``bvecs`` (FSL layout) and ``mask.nii.gz``.
    out : Path
        Output directory (made if missing): ``fodf.nii.gz``, the response files and, for
        several shells, ``gm.nii.gz`` and ``csf.nii.gz``; with ``denoise``, ``dwi_denoised.nii.gz``.
    multishell : bool
        ``dhollander`` + ``msmt_csd`` (True) or ``tournier`` + ``csd`` (False).
    denoise : bool
        Run ``dwidenoise`` first.
    nthreads : int
        ``-nthreads`` of every command.
    erode : int
        Mask erosion passes of ``dwi2response dhollander`` (multi-shell only).

    Raises
    ------
    RuntimeError
        A command exited non-zero.
    """
    out.mkdir(parents=True, exist_ok=True)
    p = in_dir.resolve()
    dwi = p / "dwi.nii.gz"
    grad = ["-fslgrad", p / "bvecs", p / "bvals"]
    opts = ["-mask", p / "mask.nii.gz", "-nthreads", nthreads, "-force", "-quiet"]
    if denoise:
        _mrtrix(["dwidenoise", dwi, "dwi_denoised.nii.gz", *opts], out)
        dwi = out.resolve() / "dwi_denoised.nii.gz"
    if multishell:
        _mrtrix(["dwi2response", "dhollander", dwi, "response_wm.txt", "response_gm.txt", "response_csf.txt",
                 "-erode", erode, *grad, *opts], out)
        _mrtrix(["dwi2fod", "msmt_csd", dwi, "response_wm.txt", "fodf.nii.gz", "response_gm.txt", "gm.nii.gz",
                 "response_csf.txt", "csf.nii.gz", *grad, *opts], out)
    else:
        _mrtrix(["dwi2response", "tournier", dwi, "response_wm.txt", *grad, *opts], out)
        _mrtrix(["dwi2fod", "csd", dwi, "response_wm.txt", "fodf.nii.gz", *grad, *opts], out)
