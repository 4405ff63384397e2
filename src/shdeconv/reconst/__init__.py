"""DIPY-style reconstruction API: ``SHDModel(gtab).fit(data, mask)``."""

from ._model import SHDFit, SHDModel

__all__ = ["SHDFit", "SHDModel"]
