"""The ``shdeconv`` entry point: parse, run the command, and turn errors into exit codes.

Exit codes: 0 done; 2 a bad input file or option, or an optimisation that diverged at the
options given (one line on stderr); 1 an unexpected error, which keeps its traceback, or out of
memory (with a hint); 130 interrupted. An output directory that a failed command created and
left empty is removed.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from .._options import OptionError
from ._parser import build_parser

__all__ = ["build_parser", "main"]


_RESUMABLE = {"fit": "rerun with --resume to continue from the last checkpoint",
              "train": "rerun with --resume to continue from the last checkpoint",
              "benchmark": "rerun the same command to continue with the cells not yet done"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    logging.basicConfig(level=logging.INFO if verbose and not quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("default")
    output = getattr(args, "output", None)
    created = output is not None and not Path(output).exists()
    code = 1
    try:
        code = _run(args)
    finally:
        if code != 0 and created:
            _remove_if_empty(Path(output))
    return code


def _remove_if_empty(path: Path) -> None:
    try:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    except OSError:
        pass


def _run(args) -> int:
    from ..io import InputError

    try:
        if getattr(args, "nthreads", None) is not None:
            if args.nthreads < 1:
                raise OptionError(f"--nthreads must be >= 1, got {args.nthreads}")
            import torch

            torch.set_num_threads(args.nthreads)
        return args.func(args)
    except (InputError, OptionError, FloatingPointError) as e:  # the last: a loss diverged ("try a lower --lr")
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
