"""Settings as plain data, validated once: the error type and the checks every config shares.

A bad setting (a negative learning rate, an unknown variant, options that exclude each other)
is the user's to fix, like a bad file, so the command line reports an :class:`OptionError`
in one line with exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path

__all__ = ["OptionError", "ValidatedConfig", "add_gradient_options", "check_device", "check_even_order",
           "check_gradient_options", "check_patch_size", "check_precision", "resolve_device"]


class OptionError(ValueError):
    """A setting or command-line option has a value the tool cannot use."""


#: ``--denoise`` choices: none, DIPY MP-PCA, DIPY local PCA with a PCA noise map
#: (:func:`shdeconv.fitting.denoise_pca`), or MP-PCA where neighbouring voxels' fibres agree
#: (:func:`shdeconv.fitting.choose_denoise`)
DENOISERS = ("none", "mppca", "localpca", "auto")
#: ``shdeconv fit``'s default denoising
FIT_DENOISE = "auto"
#: number formats of a network's inference pass (``predict --precision``; ``DeconvNet.precision``)
PRECISIONS = ("float32", "bfloat16")


class ValidatedConfig:
    """Mixin for frozen dataclasses of settings: checks that name the setting and its value.

    Subclasses call the checks from ``__post_init__``; each raises :class:`OptionError`.
    """

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise OptionError(f"{name} must be positive, got {value!r}")

    def _non_negative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise OptionError(f"{name} must be >= 0, got {value!r}")

    def _choice(self, name: str, choices) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise OptionError(f"{name} must be one of {tuple(choices)}, got {value!r}")

    def _fraction(self, name: str) -> None:
        value = getattr(self, name)
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise OptionError(f"{name} must be in [0, 1), got {value!r}")


def check_even_order(value, what: str = "lmax") -> int:
    """``value`` if it is an even integer >= 2 (an SH order of an antipodally symmetric
    function), else :class:`OptionError`."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) and value >= 2 and value % 2 == 0):
        raise OptionError(f"{what} must be an even integer >= 2, got {value!r}")
    return int(value)


def check_precision(value) -> str:
    """``value`` if it is one of :data:`PRECISIONS`, else :class:`OptionError`."""
    if value not in PRECISIONS:
        raise OptionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def check_patch_size(size, multiple: int, what: str = "patch size") -> int:
    """``size`` if it is a positive multiple of ``multiple`` (the network's spatial pooling needs
    sides it can halve), else :class:`OptionError` naming the nearest sizes that work."""
    if isinstance(size, bool) or not (isinstance(size, numbers.Integral) and size > 0):
        raise OptionError(f"{what} must be a positive integer, got {size!r}")
    size = int(size)
    if size % multiple:
        lower, upper = size - size % multiple, size - size % multiple + multiple
        nearest = f"{lower} or {upper}" if lower else f"{upper}"
        raise OptionError(f"{what} {size}: this network pools space {multiple}x, so patches and tiles must be "
                          f"multiples of {multiple} ({nearest})")
    return size


def add_gradient_options(parser) -> None:
    """The gradient-table options of every command that reads a dwi (an ``argparse`` parser)."""
    parser.add_argument("--bvals", type=Path, default=None, help="FSL bvals file (with --bvecs)")
    parser.add_argument("--bvecs", type=Path, default=None, help="FSL bvecs file (with --bvals)")
    parser.add_argument("--grad", type=Path, default=None,
                        help="MRtrix3 gradient table (x y z b rows, scanner frame) instead of --bvals/--bvecs "
                             "(default for a .mif dwi: the table in its header)")


def check_gradient_options(dwi, bvals, bvecs, grad) -> None:
    """:class:`OptionError` unless the gradient table is given once: FSL ``bvals`` and ``bvecs``
    together, or an MRtrix3 ``grad`` file, or neither for an MRtrix3 ``dwi`` (whose header may
    hold it; :func:`~shdeconv.io.load_dwi` checks that it does)."""
    if (bvals is None) != (bvecs is None):
        raise OptionError(f"--{'bvals' if bvals is not None else 'bvecs'} needs "
                          f"--{'bvecs' if bvals is not None else 'bvals'} too (FSL's two files go together)")
    if grad is not None and bvals is not None:
        raise OptionError("--grad and --bvals/--bvecs give the gradient table twice: use one")
    from .io._mrtrix import is_mrtrix_image

    if grad is None and bvals is None and not is_mrtrix_image(dwi):
        raise OptionError(f"{dwi}: a NIfTI dwi needs its gradient table: --bvals and --bvecs (FSL) or --grad "
                          "(MRtrix3)")


def check_device(device: str) -> str:
    """``device`` if it names one the tool can use (``auto``, ``cpu``, ``cuda``, ``cuda:N``), else
    :class:`OptionError`. Whether that device exists is :func:`resolve_device`'s business."""
    if not (isinstance(device, str) and (device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", device))):
        raise OptionError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def resolve_device(device: str = "auto"):
    """The ``torch.device`` for ``device``: ``auto`` -> CUDA when available, else CPU.

    Asking for ``cuda`` on a machine without one is an :class:`OptionError` (raised before any
    data is read, by every command that computes).
    """
    import torch

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"--device {device} was asked for, but no CUDA GPU is available")
    return torch.device(device)
