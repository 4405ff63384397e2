"""Fibre directions from fODFs: peak extraction (``peaks.nii.gz``, DIPY's name for this layer).

Below ``fitting`` (which writes peaks with every fODF) and ``evaluation`` (which scores them);
reading and writing the ``sh2peaks`` file layout is :mod:`shdeconv.io`'s.
"""

from ._peaks import peak_sphere, sh_peaks

__all__ = ["peak_sphere", "sh_peaks"]
