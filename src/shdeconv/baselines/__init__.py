"""Reference methods (DIPY CSD and MSMT-CSD) with shdeconv's inputs and outputs."""

from ._csd import csd_fit

__all__ = ["csd_fit"]
