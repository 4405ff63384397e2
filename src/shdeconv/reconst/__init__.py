"""DIPY-style reconstruction API: ``SHDModel(gtab).fit(data, mask)``, ``SHDPredictModel(gtab).fit(data, mask)``."""

from ._model import SHDFit, SHDModel, SHDPredictModel

__all__ = ["SHDFit", "SHDModel", "SHDPredictModel"]
