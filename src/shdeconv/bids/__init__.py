"""``shdeconv bids``: fit, predict or csd on every participant of a BIDS dataset (the BIDS-App convention).

:func:`find_dwi` lists a dataset's diffusion series (raw BIDS, or a derivative dataset such as
QSIPrep's) with their gradient files and brain masks; :func:`run_bids` runs one job per series
and stores its results as a BIDS-Derivatives dataset (BEP016 names, :func:`output_names`).
:func:`add_parser` adds the ``bids`` command to the command line. The library functions are
imported on first use, so that building the command line does not load pybids or torch.
"""

from ._cli import add_parser, cmd_bids

__all__ = ["DwiSeries", "add_parser", "cmd_bids", "find_dwi", "output_names", "run_bids"]

_LAZY = {"DwiSeries": "._layout", "find_dwi": "._layout", "output_names": "._app", "run_bids": "._app"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
