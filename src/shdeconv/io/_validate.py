"""The input error type and the small checks shared by the readers.

Every problem with a user's file is an :class:`InputError` whose message is one line,
``"<file>: <problem>"``, so that the command line can print it and exit with status 2.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["InputError", "read_numeric_table", "check_file_exists"]


class InputError(ValueError):
    """A user-supplied file is missing, unreadable or inconsistent.

    Parameters
    ----------
    path : str or PathLike
        The file (or directory) at fault. Called with a single argument, it is taken as
        the whole, already formatted ``"<file>: <problem>"`` message.
    problem : str, optional
        What is wrong with it and, where possible, what was expected.
    """

    def __init__(self, path: str | PathLike, problem: str | None = None):
        if problem is None:
            message = " ".join(str(path).split())
            self.path, _, self.problem = message.partition(": ")
        else:
            self.path = str(path)
            self.problem = " ".join(str(problem).split())  # always one line
            message = f"{self.path}: {self.problem}"
        super().__init__(message)


def check_file_exists(path: str | PathLike, what: str) -> Path:
    """Return ``path`` as a :class:`Path`; :class:`InputError` if it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"{what} file does not exist")
    if not p.is_file():
        raise InputError(p, f"{what} path is not a regular file")
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise InputError(p, f"cannot open the {what} file ({e.strerror})") from e
    return p


def read_numeric_table(path: str | PathLike, what: str, *, allow_nonfinite: bool = False) -> np.ndarray:
    """Read a whitespace (or comma) separated table of numbers, shape ``(rows, cols)``.

    Lines starting with ``#`` and blank lines are skipped. All rows must have the same
    length (``nan``/``inf`` tokens are kept only with ``allow_nonfinite``). Raises :class:`InputError` naming the file, line and token on any problem.
    """
    p = check_file_exists(path, what)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, f"cannot read the {what} file as text ({e})") from e
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.replace(",", " ").split()
        try:
            rows.append([float(t) for t in tokens])
        except ValueError as e:
            raise InputError(p, f"line {lineno} of the {what} file is not numeric: {line[:60]!r}") from e
    if not rows:
        raise InputError(p, f"the {what} file holds no numbers")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise InputError(p, f"the {what} file has rows of different lengths {sorted(lengths)}")
    table = np.asarray(rows, dtype=np.float64)
    if not allow_nonfinite and not np.all(np.isfinite(table)):
        raise InputError(p, f"the {what} file contains NaN or Inf values")
    return table
