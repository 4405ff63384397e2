"""Reference methods (DIPY CSD and MSMT-CSD, MRtrix3's CSD) with shdeconv's inputs and outputs."""

from ._csd import csd_fit
from ._mrtrix import dhollander_erode, mrtrix_version, run_mrtrix_csd

__all__ = ["csd_fit", "dhollander_erode", "mrtrix_version", "run_mrtrix_csd"]
