"""Fibre directions from fODFs: peak extraction (``peaks.nii.gz``, DIPY's name for this layer),
and the check of a gradient table's axes by the coherence of the fibre field it gives.

Below ``fitting`` (which writes peaks with every fODF) and ``evaluation`` (which scores them);
reading and writing the ``sh2peaks`` file layout is :mod:`shdeconv.io`'s.
"""

__all__ = ["GradientCheck", "check_gradients", "peak_sphere", "sh_peaks"]

# imported on first use: the command line's parser reads ``_gradcheck_cli`` from this package,
# and ``shdeconv --help`` should not wait for torch
_LAZY = {"GradientCheck": "._gradcheck", "check_gradients": "._gradcheck", "peak_sphere": "._peaks",
         "sh_peaks": "._peaks"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
