"""MRtrix3 response function files.

Format (as written by ``dwi2response`` in MRtrix3 3.0): text, comment lines start with
``#``; a ``# Shells: 0,1000,2000`` comment lists the b-value of every row; each row holds the
zonal SH coefficients :math:`r_l` for :math:`l = 0, 2, 4, \\dots` of one shell, separated
by spaces. Multi-shell files pad rows with zeros to the same length; rows read here may
differ in length and are padded with zeros.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import numpy as np

from ._atomic import atomic_write_text
from ._validate import InputError, check_file_exists

__all__ = ["read_response_file", "write_response_file"]

_SHELLS = re.compile(r"^#\s*shells\s*:\s*(.*)$", re.IGNORECASE)


def read_response_file(path: str | PathLike) -> tuple[np.ndarray, list[float] | None]:
    """Read an MRtrix3 response file.

    Returns
    -------
    coeffs : ndarray ``(rows, n_l)`` float64
        Zonal coefficients, one row per shell, zero padded.
    shells : list of float or None
        b-value of every row, from a ``# Shells:`` comment when present.

    Raises
    ------
    InputError
        Missing file, non-numeric or non-finite entries, no rows, or a ``Shells`` comment
        whose count differs from the number of rows.
    """
    p = check_file_exists(path, "response")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, f"cannot read the response file as text ({e})") from e
    rows: list[list[float]] = []
    shells: list[float] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _SHELLS.match(line)
            if m:
                try:
                    shells = [float(t) for t in m.group(1).replace(",", " ").split()]
                except ValueError as e:
                    raise InputError(p, f"line {lineno}: cannot parse the Shells comment {line!r}") from e
            continue
        try:
            rows.append([float(t) for t in line.replace(",", " ").split()])
        except ValueError as e:
            raise InputError(p, f"line {lineno} is not a row of numbers: {line[:60]!r}") from e
    if not rows:
        raise InputError(p, "the response file holds no coefficients")
    n_l = max(len(r) for r in rows)
    coeffs = np.zeros((len(rows), n_l))
    for i, r in enumerate(rows):
        coeffs[i, : len(r)] = r
    if not np.all(np.isfinite(coeffs)):
        raise InputError(p, "the response file contains NaN or Inf")
    if shells is not None and len(shells) != len(rows):
        raise InputError(p, f"the Shells comment lists {len(shells)} b-values but the file has {len(rows)} rows")
    return coeffs, shells


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.10g}"


def write_response_file(path: str | PathLike, coeffs: np.ndarray, shells=None, comment: str | None = None) -> Path:
    """Write an MRtrix3 response file atomically.

    Parameters
    ----------
    path : str or PathLike
    coeffs : ndarray ``(rows, n_l)`` or ``(n_l,)``
        Zonal coefficients, one row per shell.
    shells : sequence of float, optional
        b-value of every row, written as ``# Shells: b0,b1,...``.
    comment : str, optional
        Extra comment line(s), each written with a leading ``#``.
    """
    c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
    if c.ndim != 2 or not np.all(np.isfinite(c)):
        raise ValueError(f"response coefficients must be a finite (rows, n_l) array, got shape {c.shape}")
    lines = []
    if comment:
        lines += [f"# {ln}" for ln in str(comment).splitlines()]
    if shells is not None:
        shells = [float(b) for b in np.ravel(shells)]
        if len(shells) != c.shape[0]:
            raise ValueError(f"{len(shells)} shells given for {c.shape[0]} response rows")
        lines.append("# Shells: " + ",".join(f"{b:g}" for b in shells))
    lines += [" ".join(_fmt(x) for x in row) for row in c]
    return atomic_write_text(path, "\n".join(lines) + "\n")
