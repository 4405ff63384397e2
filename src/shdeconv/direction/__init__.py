"""Fibre directions from fODFs: peak extraction (``peaks.nii.gz``, DIPY's name for this layer),
and the check of a gradient table's axes by the coherence of the fibre field it gives.

Below ``fitting`` (which writes peaks with every fODF) and ``evaluation`` (which scores them);
reading and writing the ``sh2peaks`` file layout is :mod:`shdeconv.io`'s.
"""

from ._gradcheck import GradientCheck, check_gradients
from ._peaks import peak_sphere, sh_peaks

__all__ = ["GradientCheck", "check_gradients", "peak_sphere", "sh_peaks"]
